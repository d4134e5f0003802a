//! Live edits that would break routing are rejected the way the Kubernetes
//! API server would have rejected them: when a pool, model, rewrite or
//! objective object changes into something invalid (a weight of 0, an empty target, an
//! unknown criticality, or a document that no longer type-checks), the
//! collector keeps serving the object's last valid version and reports the
//! rejected edit (a warning log line, a `Problem`, and
//! `llmgw_collector_rejected_edits_total`). Without a last valid version (an
//! object invalid from the start) the object is skipped as before. Deleting
//! the object forgets it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::discovery::{Inventory, Stored};
use crate::model::{edit_error, Problem};

#[derive(Debug, Default)]
pub struct LastValid {
    /// Last valid version of each pool/model/rewrite/objective, by display name.
    kept: HashMap<String, Arc<Stored>>,
    /// `(object, message)` of rejected edits already counted.
    counted: HashSet<(String, String)>,
}

/// An inventory with rejected edits replaced by the last valid versions.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub inventory: Inventory,
    /// Edits rejected this time that were not rejected before.
    pub newly_rejected: Vec<Problem>,
}

impl LastValid {
    pub fn apply(&mut self, inventory: &Inventory) -> Checked {
        let mut out = Inventory {
            objects: Vec::with_capacity(inventory.objects.len()),
            problems: inventory.problems.clone(),
            synced: inventory.synced,
        };
        let mut present: HashSet<String> = HashSet::new();
        let mut rejected: Vec<Problem> = Vec::new();
        for stored in &inventory.objects {
            let name = stored.resource.display_name();
            match edit_error(stored) {
                None => {
                    if matches!(
                        stored.resource,
                        crate::resources::Resource::Model(_)
                            | crate::resources::Resource::PoolV1(_)
                            | crate::resources::Resource::PoolV1Alpha2(_)
                            | crate::resources::Resource::Rewrite(..)
                            | crate::resources::Resource::Objective(..)
                    ) {
                        self.kept.insert(name.clone(), stored.clone());
                    }
                    out.objects.push(stored.clone());
                }
                Some(message) => match self.kept.get(&name) {
                    Some(previous) => {
                        rejected.push(Problem {
                            object: name.clone(),
                            message: format!(
                                "edit rejected ({message}); serving its last valid version"
                            ),
                        });
                        out.objects.push(previous.clone());
                    }
                    None => out.objects.push(stored.clone()),
                },
            }
            present.insert(name);
        }
        // Objects discovery could not type-check any more: same rule.
        for problem in &inventory.problems {
            if present.contains(&problem.object) {
                continue;
            }
            if let Some(previous) = self.kept.get(&problem.object) {
                rejected.push(Problem {
                    object: problem.object.clone(),
                    message: format!(
                        "edit rejected ({}); serving its last valid version",
                        problem.message
                    ),
                });
                out.objects.push(previous.clone());
                present.insert(problem.object.clone());
            }
        }
        self.kept.retain(|name, _| present.contains(name));
        let mut newly_rejected = Vec::new();
        let now: HashSet<(String, String)> = rejected
            .iter()
            .map(|p| (p.object.clone(), p.message.clone()))
            .collect();
        for problem in &rejected {
            if !self
                .counted
                .contains(&(problem.object.clone(), problem.message.clone()))
            {
                newly_rejected.push(problem.clone());
            }
        }
        self.counted = now;
        out.problems.extend(rejected);
        Checked {
            inventory: out,
            newly_rejected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Resource;
    use serde_json::json;

    fn model(weight: i64) -> Arc<Stored> {
        let value = json!({
            "apiVersion": "inference.networking.x-k8s.io/v1alpha2",
            "kind": "InferenceModel",
            "metadata": {"name": "travel", "namespace": "default"},
            "spec": {"modelName": "travelhelper", "poolRef": {"name": "pool"},
                     "targetModels": [{"name": "v1", "weight": 90}, {"name": "v2", "weight": weight}]}
        });
        let crate::resources::Parsed::Ok(resource) = Resource::from_value(value) else {
            panic!("not ours");
        };
        Arc::new(Stored {
            resource: *resource,
            seen_order: 0,
            origin: "test".into(),
        })
    }

    fn inventory(objects: Vec<Arc<Stored>>, problems: Vec<Problem>) -> Inventory {
        Inventory {
            objects,
            problems,
            synced: true,
        }
    }

    fn pool(selector: serde_json::Value) -> Arc<Stored> {
        let value = json!({
            "apiVersion": "inference.networking.k8s.io/v1",
            "kind": "InferencePool",
            "metadata": {"name": "pool", "namespace": "default"},
            "spec": {"selector": {"matchLabels": selector}, "targetPorts": [{"number": 8000}]}
        });
        let crate::resources::Parsed::Ok(resource) = Resource::from_value(value) else {
            panic!("not ours");
        };
        Arc::new(Stored {
            resource: *resource,
            seen_order: 0,
            origin: "test".into(),
        })
    }

    #[test]
    fn an_invalid_pool_edit_keeps_the_pool_it_replaced() {
        let mut lv = LastValid::default();
        let good = pool(json!({"app": "vllm"}));
        let checked = lv.apply(&inventory(vec![good.clone()], vec![]));
        assert_eq!(checked.inventory.objects, vec![good.clone()]);
        // An empty selector would select every pod: rejected, the old pool stays.
        let checked = lv.apply(&inventory(vec![pool(json!({}))], vec![]));
        assert_eq!(checked.inventory.objects, vec![good.clone()]);
        assert_eq!(checked.newly_rejected.len(), 1);
        assert!(
            checked.newly_rejected[0]
                .message
                .contains("selector is empty"),
            "{:?}",
            checked.newly_rejected
        );
    }

    #[test]
    fn an_invalid_edit_keeps_the_last_valid_version_and_is_counted_once() {
        let mut lv = LastValid::default();
        let good = model(10);
        let checked = lv.apply(&inventory(vec![good.clone()], vec![]));
        assert_eq!(checked.inventory.objects, vec![good.clone()]);
        assert!(checked.newly_rejected.is_empty());

        let bad = inventory(vec![model(0)], vec![]);
        let checked = lv.apply(&bad);
        assert_eq!(checked.inventory.objects, vec![good.clone()]);
        assert_eq!(checked.newly_rejected.len(), 1);
        assert!(checked.newly_rejected[0].message.contains("weight 0"));
        assert!(checked.inventory.problems[0]
            .message
            .contains("last valid version"));
        // Same bad edit again: still kept, not counted again.
        let checked = lv.apply(&bad);
        assert_eq!(checked.inventory.objects, vec![good.clone()]);
        assert!(checked.newly_rejected.is_empty());

        // A document that no longer type-checks: kept as well.
        let broken = inventory(
            vec![],
            vec![Problem {
                object: "InferenceModel/default/travel".into(),
                message: "invalid type".into(),
            }],
        );
        assert_eq!(lv.apply(&broken).inventory.objects, vec![good.clone()]);

        // A valid edit is taken; deleting forgets.
        let better = model(20);
        assert_eq!(
            lv.apply(&inventory(vec![better.clone()], vec![]))
                .inventory
                .objects,
            vec![better]
        );
        assert!(lv
            .apply(&inventory(vec![], vec![]))
            .inventory
            .objects
            .is_empty());
        // Invalid from the start (nothing kept): passed on, build skips it.
        let first_bad = model(0);
        assert_eq!(
            lv.apply(&inventory(vec![first_bad.clone()], vec![]))
                .inventory
                .objects,
            vec![first_bad]
        );
    }
}
