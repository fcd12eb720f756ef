//! What the benchmark reads about the server processes from `/proc`: proportional
//! set size (memory) and user+system CPU time.

use std::io;

/// Clock ticks per second in `/proc/PID/stat` (`USER_HZ`): 100 on every Linux
/// architecture the broker targets.
const USER_HZ: f64 = 100.0;

/// Sum of the PSS of `pids`, in KiB.
pub(crate) fn pss_kib(pids: &[u32]) -> io::Result<u64> {
    let mut total = 0;
    for pid in pids {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
        total += parse_pss_kib(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no Pss line in /proc/{pid}/smaps_rollup"),
            )
        })?;
    }
    Ok(total)
}

/// Sum of user and system CPU time of `pids` (all threads, exited ones included), in seconds.
pub(crate) fn cpu_seconds(pids: &[u32]) -> io::Result<f64> {
    let mut ticks = 0;
    for pid in pids {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        ticks += parse_cpu_ticks(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("cannot read utime/stime from /proc/{pid}/stat"),
            )
        })?;
    }
    Ok(ticks as f64 / USER_HZ)
}

fn parse_pss_kib(smaps_rollup: &str) -> Option<u64> {
    smaps_rollup.lines().find_map(|line| {
        let rest = line.strip_prefix("Pss:")?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// utime + stime: fields 14 and 15 of `stat`. The command name (field 2) may
/// contain spaces and parentheses, so counting starts after its last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pss_from_smaps_rollup() {
        let text = "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:               10240 kB\nPss:                8123 kB\nPss_Anon:           6000 kB\n";
        assert_eq!(parse_pss_kib(text), Some(8123));
        assert_eq!(parse_pss_kib("Rss: 1 kB\n"), None);
    }

    #[test]
    fn reads_utime_and_stime_after_an_awkward_command_name() {
        let stat = "4242 (we ird) name)) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 567 0 0 20 0 3 0 100 1000 200";
        assert_eq!(parse_cpu_ticks(stat), Some(1234 + 567));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1 2"), None);
    }

    // /proc is Linux's: elsewhere `sse-cluster bench --server-pid` reports an error.
    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(pss_kib(&[me]).unwrap() > 0);
        assert!(cpu_seconds(&[me]).unwrap() >= 0.0);
        assert!(pss_kib(&[u32::MAX]).is_err());
    }
}
