//! Optional authorization of publish and subscribe with JWTs (off unless a key is
//! configured). A token is signed with a shared secret (HS256/384/512) or a private
//! key whose public half the node has (RS256/384/512, ES256, ES384), and lists the
//! channels it may use:
//!
//! ```json
//! {"sse": {"publish": ["news"], "subscribe": ["news", "sport"]}, "exp": 1767225600}
//! ```
//!
//! `*` stands for every channel; `POST /channel` (every channel at once) needs it.
//! A pattern such as `orders.*` grants the pattern itself (`GET /channel/orders.*`),
//! every channel it matches (`orders.x`) and the narrower patterns (`orders.eu.*`).
//! `exp` and `nbf` are checked against the node's clock with [`LEEWAY_SECS`] of slack,
//! and a subscriber's stream ends at its token's `exp`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::time::Instant;

use super::{ApiError, AppState};
use crate::broker::pattern_prefix;
use crate::clock::Clock;
use crate::refusal::ErrorKind;

/// Slack for clocks that disagree between the token's issuer and this node.
pub(crate) const LEEWAY_SECS: u64 = 5;

/// The cookie a token may travel in (for browsers on the same site).
pub(crate) const COOKIE: &str = "sse_token";

/// The query parameter a token may travel in (`EventSource` cannot set headers).
pub(crate) const QUERY: &str = "authorization";

/// Which side of the API a request is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Publish,
    Subscribe,
}

/// Which keys verify tokens and which sides need one: the auth part of the node's
/// [`crate::Config`].
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// Shared secret for HS256 tokens; setting it (or a public key) enables
    /// authorization of the public API.
    pub jwt_secret: Option<String>,
    /// PEM text of the public key for RS256 or ES256 tokens (the binary reads it from
    /// the file given to `--auth.jwtPublicKeyFile`).
    pub jwt_public_key: Option<String>,
    /// Publishing requires a token with the channel in its `sse.publish` claim.
    pub publish: bool,
    /// Subscribing requires a token with the channel in its `sse.subscribe` claim.
    pub subscribe: bool,
}

impl AuthSettings {
    /// Whether tokens are checked on either side.
    pub fn required(&self) -> bool {
        self.publish || self.subscribe
    }

    /// Whether a key to verify tokens with is set.
    pub fn has_key(&self) -> bool {
        self.jwt_secret.is_some() || self.jwt_public_key.is_some()
    }
}

/// A public key for verifying tokens, and the signature algorithms it admits.
#[derive(Clone)]
pub struct JwtPublicKey {
    pub key: DecodingKey,
    pub algorithms: Vec<Algorithm>,
}

impl std::fmt::Debug for JwtPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtPublicKey")
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

impl JwtPublicKey {
    /// Reads a PEM public key (`BEGIN PUBLIC KEY`, or `BEGIN RSA PUBLIC KEY`): an
    /// RSA key admits RS256, RS384 and RS512; a P-256 key ES256; a P-384 key ES384.
    pub fn from_pem(pem: &str) -> Result<JwtPublicKey, String> {
        if pem.contains("PRIVATE KEY") {
            return Err("the file holds a private key; give the public key".into());
        }
        if let Ok(key) = DecodingKey::from_ec_pem(pem.as_bytes()) {
            // The key is the uncompressed curve point: 0x04, then x and y.
            let algorithm = match key.as_bytes().len() {
                65 => Algorithm::ES256,
                97 => Algorithm::ES384,
                _ => return Err("EC keys must be on P-256 (ES256) or P-384 (ES384)".into()),
            };
            return Ok(JwtPublicKey {
                key,
                algorithms: vec![algorithm],
            });
        }
        match DecodingKey::from_rsa_pem(pem.as_bytes()) {
            Ok(key) => Ok(JwtPublicKey {
                key,
                algorithms: vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
            }),
            Err(_) => Err("not a PEM RSA or EC public key".into()),
        }
    }
}

/// The node's keys and which sides need a token.
#[derive(Debug, Clone)]
pub struct Auth {
    publish: bool,
    subscribe: bool,
    secret: Option<DecodingKey>,
    public: Option<JwtPublicKey>,
    clock: Clock,
}

impl Auth {
    /// Authorization as configured. A key that does not parse (which
    /// [`crate::Config::validate`] reports) is left out, so the side it guards
    /// refuses every token rather than opening up.
    pub fn new(settings: &AuthSettings, clock: Clock) -> Auth {
        Auth {
            publish: settings.publish,
            subscribe: settings.subscribe,
            secret: settings
                .jwt_secret
                .as_deref()
                .map(|s| DecodingKey::from_secret(s.as_bytes())),
            public: settings
                .jwt_public_key
                .as_deref()
                .and_then(|pem| JwtPublicKey::from_pem(pem).ok()),
            clock,
        }
    }

    fn required(&self, side: Side) -> bool {
        match side {
            Side::Publish => self.publish,
            Side::Subscribe => self.subscribe,
        }
    }

    fn check(&self, side: Side, parts: &Parts) -> Result<Access, ApiError> {
        if !self.required(side) {
            return Ok(Access::Open);
        }
        let token = find_token(parts)?.ok_or_else(|| {
            unauthorized(format!(
                "a token is required: send it as `Authorization: Bearer <token>`, \
                 in the {COOKIE} cookie or in the {QUERY} query parameter"
            ))
        })?;
        let claims = self.verify(&token)?;
        Ok(Access::Token(Arc::new(claims)))
    }

    /// Checks the signature, `exp` and `nbf`; returns the claims.
    fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| unauthorized("invalid token: not a JWT"))?;
        let algorithm = header.alg;
        let key = match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => self.secret.as_ref(),
            _ => self
                .public
                .as_ref()
                .filter(|public| public.algorithms.contains(&algorithm))
                .map(|public| &public.key),
        }
        .ok_or_else(|| {
            unauthorized(format!(
                "invalid token: this node does not accept {algorithm:?} tokens"
            ))
        })?;
        let mut validation = Validation::new(algorithm);
        // Times are checked below against the node's clock; no audience is configured.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|error| {
            use jsonwebtoken::errors::ErrorKind as Jwt;
            unauthorized(match error.kind() {
                Jwt::InvalidSignature => "invalid token: bad signature",
                Jwt::Json(_) => "invalid token: claims are not as documented (sse.publish, sse.subscribe, exp, nbf)",
                _ => "invalid token: malformed",
            })
        })?;
        let claims = data.claims;
        let now_ms = self.clock.now_ms();
        let leeway_ms = LEEWAY_SECS * 1000;
        if let Some(exp) = claims.exp_ms() {
            if now_ms > exp.saturating_add(leeway_ms) {
                return Err(unauthorized("invalid token: expired"));
            }
        }
        if let Some(nbf) = claims.nbf_ms() {
            if now_ms.saturating_add(leeway_ms) < nbf {
                return Err(unauthorized("invalid token: not valid yet (nbf)"));
            }
        }
        Ok(claims)
    }

    /// When a stream opened now with these claims must end: at `exp`.
    fn deadline(&self, claims: &Claims) -> Option<Instant> {
        let exp = claims.exp_ms()?;
        let left = exp.saturating_sub(self.clock.now_ms());
        Some(Instant::now() + Duration::from_millis(left))
    }
}

/// What a request may do, as its token (or the absence of authorization) says.
#[derive(Debug, Clone)]
pub(super) enum Access {
    /// This side needs no token.
    Open,
    Token(Arc<Claims>),
}

/// The claims this node reads; others are ignored.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Claims {
    #[serde(default)]
    sse: Grants,
    /// Seconds since the Unix epoch (fractions allowed, as RFC 7519 says).
    exp: Option<f64>,
    nbf: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
struct Grants {
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    subscribe: Vec<String>,
    /// The client ids a subscriber may choose (`GET /channel/{c}/client/{id}`), `*`
    /// for any. Without the claim any id may be chosen, as before the claim existed.
    clients: Option<Vec<String>>,
}

impl Claims {
    fn exp_ms(&self) -> Option<u64> {
        self.exp.map(seconds_to_ms)
    }

    fn nbf_ms(&self) -> Option<u64> {
        self.nbf.map(seconds_to_ms)
    }
}

/// Seconds to milliseconds, saturating at 0 and `u64::MAX` (`as` saturates floats).
fn seconds_to_ms(seconds: f64) -> u64 {
    (seconds * 1000.0) as u64
}

/// Whether `list` grants `name` (a channel, a pattern or a client id): `*`, the
/// name itself, or a pattern (`orders.*`) whose prefix the name starts with, so a
/// pattern grants its channels and the narrower patterns (`orders.eu.*`).
fn grants(list: &[String], name: &str) -> bool {
    list.iter().any(|granted| {
        granted == "*"
            || granted == name
            || pattern_prefix(granted).is_some_and(|prefix| name.starts_with(prefix))
    })
}

impl Access {
    /// Publishing to `channel` (alone or to one of its clients).
    pub(super) fn publish(&self, channel: &str) -> Result<(), ApiError> {
        match self {
            Access::Open => Ok(()),
            Access::Token(claims) if grants(&claims.sse.publish, channel) => Ok(()),
            Access::Token(_) => Err(forbidden(format!(
                "the token does not allow publishing to channel {channel:?}"
            ))),
        }
    }

    /// Publishing to every channel at once needs `*`.
    pub(super) fn publish_all(&self) -> Result<(), ApiError> {
        match self {
            Access::Open => Ok(()),
            Access::Token(claims) if claims.sse.publish.iter().any(|c| c == "*") => Ok(()),
            Access::Token(_) => Err(forbidden(
                "publishing to every channel needs \"*\" in the token's sse.publish claim",
            )),
        }
    }

    /// Subscribing to `channel`, as `client` when the subscriber chose its id.
    pub(super) fn subscribe(&self, channel: &str, client: Option<&str>) -> Result<(), ApiError> {
        let claims = match self {
            Access::Open => return Ok(()),
            Access::Token(claims) => claims,
        };
        if !grants(&claims.sse.subscribe, channel) {
            return Err(forbidden(format!(
                "the token does not allow subscribing to channel {channel:?}"
            )));
        }
        match (client, &claims.sse.clients) {
            (Some(client), Some(clients)) if !grants(clients, client) => Err(forbidden(format!(
                "the token does not allow the client id {client:?}"
            ))),
            _ => Ok(()),
        }
    }
}

/// The access of a publish request: a token is checked here (401), the channel by
/// the route (403).
pub(super) struct PublishAccess(pub(super) Access);

/// The access of a subscribe request, and when its stream must end.
pub(super) struct SubscribeAccess {
    pub(super) access: Access,
    pub(super) deadline: Option<Instant>,
}

impl FromRequestParts<AppState> for PublishAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.auth.check(Side::Publish, parts).map(PublishAccess)
    }
}

impl FromRequestParts<AppState> for SubscribeAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let access = state.auth.check(Side::Subscribe, parts)?;
        let deadline = match &access {
            Access::Open => None,
            Access::Token(claims) => state.auth.deadline(claims),
        };
        Ok(SubscribeAccess { access, deadline })
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    authorization: Option<String>,
}

/// The token of a request: the `Authorization` header, else the query parameter,
/// else the cookie. A header that is there but not `Bearer` is refused rather than
/// passed over.
fn find_token(parts: &Parts) -> Result<Option<String>, ApiError> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(strip_bearer)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
        return Ok(Some(token.to_owned()));
    }
    if let Ok(Query(query)) = Query::<TokenQuery>::try_from_uri(&parts.uri) {
        if let Some(value) = query.authorization.filter(|v| !v.is_empty()) {
            let token = strip_bearer(&value).unwrap_or(&value).trim().to_owned();
            return Ok(Some(token));
        }
    }
    Ok(cookie(&parts.headers))
}

/// `Bearer <token>`, the scheme in any case.
fn strip_bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE && !value.is_empty())
        .map(|(_, value)| value.trim_matches('"').to_owned())
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::Unauthorized, message)
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::Forbidden, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)], uri: &str) -> Parts {
        let mut request = axum::http::Request::builder().uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).expect("request").into_parts().0
    }

    #[test]
    fn tokens_are_found_in_header_query_and_cookie() {
        let found = |headers: &[(&str, &str)], uri: &str| find_token(&parts(headers, uri));
        assert_eq!(
            found(&[("authorization", "bearer abc")], "/").unwrap(),
            Some("abc".into())
        );
        assert_eq!(
            found(&[], "/x?lastEventId=1&authorization=Bearer%20q").unwrap(),
            Some("q".into())
        );
        assert_eq!(
            found(&[], "/x?authorization=plain").unwrap(),
            Some("plain".into())
        );
        assert_eq!(
            found(&[("cookie", "a=b; sse_token=c; d=e")], "/").unwrap(),
            Some("c".into())
        );
        assert_eq!(found(&[("cookie", "sse_tokenx=c")], "/").unwrap(), None);
        assert_eq!(found(&[], "/").unwrap(), None);
        assert!(found(&[("authorization", "Basic abc")], "/").is_err());
        assert!(found(&[("authorization", "Bearer ")], "/").is_err());
    }

    #[test]
    fn grants_match_names_and_star() {
        let claims = |publish: &[&str]| {
            Access::Token(Arc::new(Claims {
                sse: Grants {
                    publish: publish.iter().map(|s| s.to_string()).collect(),
                    subscribe: Vec::new(),
                    clients: None,
                },
                ..Claims::default()
            }))
        };
        assert!(claims(&["news"]).publish("news").is_ok());
        assert!(claims(&["news"]).publish("sport").is_err());
        assert!(claims(&["news"]).publish_all().is_err());
        assert!(claims(&["*"]).publish("sport").is_ok());
        assert!(claims(&["*"]).publish_all().is_ok());
        assert!(claims(&["*"]).subscribe("news", None).is_err());
        assert!(Access::Open.publish_all().is_ok());
    }

    #[test]
    fn patterns_grant_their_channels_and_narrower_patterns() {
        let list: Vec<String> = vec!["orders.*".into(), "news".into()];
        for granted in ["orders.*", "orders.x", "orders.eu.*", "orders.eu:x", "news"] {
            assert!(grants(&list, granted), "{granted}");
        }
        for refused in ["orders", "orders:*", "order.x", "*", "news.*", "news.x"] {
            assert!(!grants(&list, refused), "{refused}");
        }
    }

    #[test]
    fn seconds_convert_without_panics() {
        assert_eq!(seconds_to_ms(1.5), 1500);
        assert_eq!(seconds_to_ms(-3.0), 0);
        assert_eq!(seconds_to_ms(1e300), u64::MAX);
    }
}
