//! The reconcile core: for each declarative object, given what was observed of the world,
//! what to do next and what its status says. Pure: no IO, no clock (the time is passed
//! in), no randomness, so every transition is a table test. The embedded controller in
//! `platter serve` and the cluster controller run the same functions and differ only in
//! their executors.
//!
//! The rule for every kind: the decision is a function of (spec, previous status,
//! observation, now). Restarting the process at any point therefore loses nothing: the
//! executor observes again and the same decision comes out, so an import in progress is
//! resumed or restarted and a running VM is adopted, never started twice.
#![forbid(unsafe_code)]

pub mod conditions;
pub mod datavolume;
pub mod snapshot;
pub mod vm;

/// Seconds since the Unix epoch, as the caller's clock says.
pub type Now = u64;

/// An event for users (`platter describe`, `kubectl describe`): Normal or Warning, a
/// CamelCase reason, a message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

impl Event {
    pub fn normal(reason: &str, message: impl Into<String>) -> Event {
        Event {
            warning: false,
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn warning(reason: &str, message: impl Into<String>) -> Event {
        Event {
            warning: true,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// RFC 3339 UTC text of a Unix time, as Kubernetes writes timestamps (`2026-12-06T21:05:00Z`).
pub fn rfc3339(t: Now) -> String {
    let days = t / 86_400;
    let secs = t % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The Unix time of an RFC 3339 UTC timestamp as [`rfc3339`] writes it
/// (`2026-12-06T21:05:00Z`); `None` for any other text.
pub fn parse_rfc3339(s: &str) -> Option<Now> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = i64::try_from(y).ok()? - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days)
        .ok()
        .map(|d| d * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's civil calendar algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_as_kubernetes_writes_them() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_796_590_800), "2026-12-06T21:00:00Z");
        for t in [0, 951_782_400, 1_796_590_800, 1_796_590_861] {
            assert_eq!(super::parse_rfc3339(&super::rfc3339(t)), Some(t));
        }
        assert_eq!(super::parse_rfc3339("2026-13-01T00:00:00Z"), None);
        assert_eq!(super::parse_rfc3339("yesterday"), None);
    }
}
