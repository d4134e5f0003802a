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
    jiff::Timestamp::from_second(unix_secs)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
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
