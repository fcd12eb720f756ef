//! The text encoding of the relay headers: `v1.<field>.<field>...`, fields in
//! canonical decimal or lowercase hex, so each value has exactly one spelling.

use super::CryptoError;

/// The version field that starts every header this module writes.
pub(super) const HEADER_PREFIX: &str = "v1";
/// Longer than any header this module writes ("v1." + 20 digits + 2 × "." + 32 + 64).
pub(super) const MAX_HEADER_LEN: usize = 128;

/// Splits `v1.<f1>.<f2>...` into exactly `N` fields after checking the version.
pub(super) fn split_header<const N: usize>(header: &str) -> Result<[&str; N], CryptoError> {
    if header.len() > MAX_HEADER_LEN {
        return Err(CryptoError::BadFormat);
    }
    let mut parts = header.split('.');
    let version = parts.next().ok_or(CryptoError::BadFormat)?;
    if version != HEADER_PREFIX {
        let looks_versioned = version.len() > 1
            && version.starts_with('v')
            && version[1..].bytes().all(|b| b.is_ascii_digit());
        return Err(if looks_versioned {
            CryptoError::WrongVersion
        } else {
            CryptoError::BadFormat
        });
    }
    let mut fields = [""; N];
    for field in &mut fields {
        *field = parts.next().ok_or(CryptoError::BadFormat)?;
    }
    if parts.next().is_some() {
        return Err(CryptoError::BadFormat);
    }
    Ok(fields)
}

/// Canonical decimal only: digits, no sign, no leading zero, no overflow.
pub(super) fn parse_decimal(field: &str) -> Result<u64, CryptoError> {
    let canonical = !field.is_empty()
        && field.bytes().all(|b| b.is_ascii_digit())
        && (field == "0" || !field.starts_with('0'));
    if !canonical {
        return Err(CryptoError::BadFormat);
    }
    field.parse().map_err(|_| CryptoError::BadFormat)
}

/// Lowercase hex.
pub(super) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Lowercase hex of exactly `N` bytes.
pub(super) fn unhex<const N: usize>(field: &str) -> Result<[u8; N], CryptoError> {
    fn nibble(digit: u8) -> Result<u8, CryptoError> {
        match digit {
            b'0'..=b'9' => Ok(digit - b'0'),
            b'a'..=b'f' => Ok(digit - b'a' + 10),
            _ => Err(CryptoError::BadFormat),
        }
    }
    let digits = field.as_bytes();
    if digits.len() != N * 2 {
        return Err(CryptoError::BadFormat);
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Ok(out)
}
