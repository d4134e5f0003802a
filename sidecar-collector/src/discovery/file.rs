//! File mode: every `*.yaml`/`*.yml` under a directory (recursively,
//! multi-document), re-read when a file's mtime or size changes.
//!
//! Polling is deliberate: it works the same on every filesystem, in
//! containers with mounted ConfigMaps (which swap symlinks), and costs one
//! `stat` per file per poll. A file that stops parsing keeps its last good
//! content (an editor's half-written save must not drop a pool), and the error
//! is reported until the file is fixed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Deserialize;
use tokio::sync::watch;

use super::{rfc3339, Inventory, Stored};
use crate::model::Problem;
use crate::resources::{Parsed, Resource};

/// (modified time, length): a cheap "did it change" check.
type Stamp = (Option<SystemTime>, u64);

struct CachedFile {
    stamp: Stamp,
    /// Documents of the last version that parsed as YAML.
    documents: Vec<serde_json::Value>,
    /// Set while the current version does not parse.
    error: Option<String>,
}

/// Watches one directory and turns its manifests into an [`Inventory`].
pub struct FileSource {
    dir: PathBuf,
    files: BTreeMap<PathBuf, CachedFile>,
    /// (kind, namespace, name) → (first-sight order, first-sight unix seconds).
    first_seen: HashMap<(String, String, String), (u64, i64)>,
    next_order: u64,
    /// Foreign kinds already logged, so each is mentioned once.
    logged_foreign: HashSet<(PathBuf, String, String)>,
}

impl FileSource {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            files: BTreeMap::new(),
            first_seen: HashMap::new(),
            next_order: 0,
            logged_foreign: HashSet::new(),
        }
    }

    /// Re-reads what changed; returns the new inventory if anything did.
    pub fn poll(&mut self) -> anyhow::Result<Option<Inventory>> {
        let listing = list_manifests(&self.dir)
            .with_context(|| format!("listing manifest directory {}", self.dir.display()))?;
        let mut changed = listing.len() != self.files.len();
        self.files.retain(|path, _| listing.contains_key(path));
        for (path, stamp) in listing {
            if self.files.get(&path).is_some_and(|f| f.stamp == stamp) {
                continue;
            }
            changed = true;
            let read = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read: {e}"))
                .and_then(|text| parse_documents(&text));
            let entry = self.files.entry(path.clone()).or_insert(CachedFile {
                stamp,
                documents: Vec::new(),
                error: None,
            });
            entry.stamp = stamp;
            match read {
                Ok(documents) => {
                    entry.documents = documents;
                    entry.error = None;
                }
                Err(err) => {
                    tracing::warn!(file = %path.display(), error = %err, "manifest does not parse; keeping its last good content");
                    entry.error = Some(err);
                }
            }
        }
        if !changed {
            return Ok(None);
        }
        Ok(Some(self.inventory()))
    }

    fn inventory(&mut self) -> Inventory {
        let now_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut problems = Vec::new();
        let mut objects = Vec::new();
        let mut keys_present = HashSet::new();
        for (path, file) in &self.files {
            let shown = path
                .strip_prefix(&self.dir)
                .unwrap_or(path)
                .display()
                .to_string();
            if let Some(err) = &file.error {
                problems.push(Problem {
                    object: shown.clone(),
                    message: format!("does not parse (last good content kept): {err}"),
                });
            }
            for (index, document) in file.documents.iter().enumerate() {
                let origin = format!("{shown}#{index}");
                match Resource::from_value(document.clone()) {
                    Parsed::Ok(resource) => {
                        let mut resource = *resource;
                        let key = object_key(&resource);
                        if !keys_present.insert(key.clone()) {
                            problems.push(Problem {
                                object: origin,
                                message: format!(
                                    "{} is defined more than once; the first definition is used",
                                    resource.display_name()
                                ),
                            });
                            continue;
                        }
                        let next = &mut self.next_order;
                        let (order, secs) = *self.first_seen.entry(key).or_insert_with(|| {
                            *next += 1;
                            (*next, now_secs)
                        });
                        let meta = resource.meta_mut();
                        if meta.creation_timestamp.is_none() {
                            meta.creation_timestamp = Some(rfc3339(secs));
                        }
                        objects.push(Arc::new(Stored {
                            resource,
                            seen_order: order,
                            origin,
                        }));
                    }
                    Parsed::NotOurs { api_version, kind } => {
                        if self.logged_foreign.insert((
                            path.clone(),
                            api_version.clone(),
                            kind.clone(),
                        )) {
                            tracing::info!(file = %shown, %api_version, %kind, "skipping a kind the collector does not read");
                        }
                    }
                    Parsed::Invalid(message) => problems.push(Problem {
                        object: origin,
                        message,
                    }),
                }
            }
        }
        // Objects that vanished are forgotten: re-adding one makes it "newer".
        self.first_seen.retain(|key, _| keys_present.contains(key));
        Inventory {
            objects,
            problems,
            synced: true,
        }
    }

    /// Polls every `interval`, publishing each changed inventory, until the
    /// receiver side of `out` is gone.
    pub async fn run(mut self, interval: Duration, out: watch::Sender<Arc<Inventory>>) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            ticker.tick().await;
            match self.poll() {
                Ok(Some(inventory)) => {
                    failing = false;
                    if out.send(Arc::new(inventory)).is_err() {
                        return;
                    }
                }
                Ok(None) => failing = false,
                Err(err) => {
                    if !failing {
                        tracing::error!(error = %format!("{err:#}"), "cannot read the manifest directory; keeping the last state");
                    }
                    failing = true;
                }
            }
            if out.is_closed() {
                return;
            }
        }
    }
}

fn object_key(resource: &Resource) -> (String, String, String) {
    let meta = resource.meta();
    (
        format!("{:?}", resource.kind()),
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone(),
    )
}

/// Splits a multi-document YAML file into JSON values, dropping empty documents.
pub fn parse_documents(text: &str) -> Result<Vec<serde_json::Value>, String> {
    let mut documents = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_json::Value::deserialize(document)
            .map_err(|e| format!("document {index}: {e}"))?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// Every `*.yaml`/`*.yml` file below `dir` (following symlinks, skipping dot
/// entries such as ConfigMap's `..data`) with its stamp.
fn list_manifests(dir: &Path) -> std::io::Result<BTreeMap<PathBuf, Stamp>> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    let mut depth_guard = 0;
    while let Some(current) = pending.pop() {
        depth_guard += 1;
        if depth_guard > 10_000 {
            break; // symlink loops cannot keep us here forever
        }
        let entries = match std::fs::read_dir(&current) {
            Ok(entries) => entries,
            Err(err) if current == dir => return Err(err),
            Err(_) => continue,
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                pending.push(path);
            } else if meta.is_file() && path.extension().is_some_and(|e| e == "yaml" || e == "yml")
            {
                found.insert(path, (meta.modified().ok(), meta.len()));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOL: &str = "apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\nmetadata:\n  name: p\nspec:\n  selector:\n    matchLabels: {app: a}\n  targetPorts: [{number: 8000}]\n";

    #[test]
    fn loads_nested_multi_document_files_and_reports_broken_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/pool.yaml"), format!("{POOL}---\n# comment only\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\n")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
        let mut source = FileSource::new(dir.path().to_path_buf());
        let inv = source.poll().unwrap().expect("first poll loads");
        assert_eq!(inv.objects.len(), 1);
        assert!(inv.problems.is_empty(), "{:?}", inv.problems);
        assert!(inv.objects[0].resource.meta().creation_timestamp.is_some());
        assert!(source.poll().unwrap().is_none(), "nothing changed");

        // A broken save keeps the last good content and reports the file.
        std::fs::write(dir.path().join("sub/pool.yaml"), "apiVersion: [unclosed\n").unwrap();
        let inv = source.poll().unwrap().expect("changed");
        assert_eq!(inv.objects.len(), 1);
        assert_eq!(inv.problems.len(), 1);
        assert!(inv.problems[0].object.contains("pool.yaml"));

        // Removing the file removes its objects.
        std::fs::remove_file(dir.path().join("sub/pool.yaml")).unwrap();
        let inv = source.poll().unwrap().expect("changed");
        assert!(inv.objects.is_empty() && inv.problems.is_empty());
    }

    #[test]
    fn duplicates_and_untyped_documents_are_problems() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), POOL).unwrap();
        std::fs::write(dir.path().join("b.yml"), format!("{POOL}---\nkind: Pod\n")).unwrap();
        let mut source = FileSource::new(dir.path().to_path_buf());
        let inv = source.poll().unwrap().unwrap();
        assert_eq!(inv.objects.len(), 1);
        let msgs: Vec<String> = inv.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(msgs
            .iter()
            .any(|m| m.contains("b.yml#0") && m.contains("more than once")));
        assert!(msgs
            .iter()
            .any(|m| m.contains("b.yml#1") && m.contains("apiVersion")));
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let mut source = FileSource::new(PathBuf::from("/nonexistent/llmgw-manifests"));
        let err = source.poll().unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/llmgw-manifests"));
    }
}
