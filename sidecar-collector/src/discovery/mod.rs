//! Where objects come from: a directory of manifests ([`file`]) or the
//! Kubernetes API ([`kube`]). Both publish a complete [`Inventory`] on a watch
//! channel whenever anything changes, so everything downstream is a pure
//! function of the latest inventory and never sees partial updates.

use std::sync::Arc;

use crate::resources::Resource;

pub mod file;
pub mod kube;

/// One object as discovery saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub resource: Resource,
    /// Order of first sight; breaks ties between objects with equal
    /// `creationTimestamp` ("oldest object wins" needs a total order).
    pub seen_order: u64,
    /// Where it came from ("path#doc" or "api"), for error messages.
    pub origin: String,
}

/// Every object currently known, plus problems discovery itself found
/// (unreadable files, objects that do not type-check).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventory {
    pub objects: Vec<Arc<Stored>>,
    pub problems: Vec<crate::model::Problem>,
    /// True once the source has loaded everything once (initial list done).
    pub synced: bool,
}

/// Formats unix seconds as RFC 3339 UTC, the way Kubernetes writes
/// `creationTimestamp`, so synthesized and real timestamps sort together.
pub fn rfc3339(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    // Howard Hinnant's days_from_civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_755_710_245), "2025-08-20T17:17:25Z");
        assert_eq!(super::rfc3339(951_825_600), "2000-02-29T12:00:00Z");
    }
}
