//! The Kubernetes objects the collector reads, as tolerant serde structs.
//!
//! Both discovery sources (a YAML directory and the Kubernetes API) hand us
//! JSON-shaped objects; [`Resource::from_value`] turns one into a typed value.
//! Unknown fields are ignored and most fields are optional, so objects written
//! for newer or older API versions still load; whether the values make sense is
//! decided later, in [`crate::model`], where problems are reported per object.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

pub const GROUP_V1: &str = "inference.networking.k8s.io";
pub const GROUP_X: &str = "inference.networking.x-k8s.io";
/// llm-d-router's group: InferenceObjective and InferenceModelRewrite live
/// here (`v1alpha2`) since GIE v1.6 removed them from [`GROUP_X`].
pub const GROUP_LLMD: &str = "llm-d.ai";

/// Pod label naming the model server engine (vllm, sglang, trtllm).
pub const ENGINE_TYPE_LABEL: &str = "inference.networking.k8s.io/engine-type";
/// Pod annotation mapping target ports to local ports, e.g. `"8000=18001,8001=18002"`.
pub const PORT_MAP_ANNOTATION: &str = "llm-gateway.io/port-map";

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub creation_timestamp: Option<String>,
    pub deletion_timestamp: Option<String>,
}

/// `poolRef` of models, objectives and rewrites (same namespace as the referrer).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct PoolRef {
    #[serde(default)]
    pub name: String,
    pub group: Option<String>,
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<SelectorRequirement>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct SelectorRequirement {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

/// `endpointPickerRef` (v1) / `extensionRef` (v1alpha2): only the failure mode matters here.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PickerRef {
    pub failure_mode: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct TargetPort {
    pub number: Option<i64>,
}

/// InferencePool `inference.networking.k8s.io/v1`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PoolSpecV1 {
    #[serde(default)]
    pub selector: LabelSelector,
    #[serde(default)]
    pub target_ports: Vec<TargetPort>,
    pub endpoint_picker_ref: Option<PickerRef>,
}

/// InferencePool `inference.networking.x-k8s.io/v1alpha2`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PoolSpecV1Alpha2 {
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    pub target_port_number: Option<i64>,
    pub extension_ref: Option<PickerRef>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct TargetModel {
    #[serde(default)]
    pub name: String,
    pub weight: Option<i64>,
}

/// InferenceModel `inference.networking.x-k8s.io/v1alpha2`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InferenceModelSpec {
    #[serde(default)]
    pub model_name: String,
    pub criticality: Option<String>,
    #[serde(default)]
    pub target_models: Vec<TargetModel>,
    #[serde(default)]
    pub pool_ref: PoolRef,
}

/// InferenceObjective, in any of its groups.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InferenceObjectiveSpec {
    pub priority: Option<i64>,
    #[serde(default)]
    pub pool_ref: PoolRef,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ModelMatch {
    #[serde(rename = "type")]
    pub match_type: Option<String>,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct RewriteMatch {
    pub model: Option<ModelMatch>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RewriteTarget {
    #[serde(default)]
    pub model_rewrite: String,
    pub weight: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct RewriteRule {
    #[serde(default)]
    pub matches: Vec<RewriteMatch>,
    #[serde(default)]
    pub targets: Vec<RewriteTarget>,
}

/// InferenceModelRewrite `inference.networking.x-k8s.io/v1alpha2` or
/// `llm-d.ai/v1alpha2` (the same schema).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InferenceModelRewriteSpec {
    #[serde(default)]
    pub pool_ref: PoolRef,
    #[serde(default)]
    pub rules: Vec<RewriteRule>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct PodCondition {
    #[serde(rename = "type", default)]
    pub condition_type: String,
    #[serde(default)]
    pub status: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(default)]
    pub conditions: Vec<PodCondition>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Pod {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub status: PodStatus,
}

impl Pod {
    /// Ready condition true and not being deleted: only such pods take traffic.
    pub fn is_ready(&self) -> bool {
        self.metadata.deletion_timestamp.is_none()
            && self
                .status
                .conditions
                .iter()
                .any(|c| c.condition_type == "Ready" && c.status.eq_ignore_ascii_case("true"))
    }
}

/// A typed custom resource: metadata plus its kind's spec.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Object<S> {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: S,
}

/// Every object the collector understands.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    PoolV1(Object<PoolSpecV1>),
    PoolV1Alpha2(Object<PoolSpecV1Alpha2>),
    Model(Object<InferenceModelSpec>),
    /// The group is kept: an objective may exist in several groups under one name.
    Objective(String, Object<InferenceObjectiveSpec>),
    /// The group is kept, as for objectives.
    Rewrite(String, Object<InferenceModelRewriteSpec>),
    Pod(Pod),
}

/// Kinds of [`Resource`], also used for watch setup and reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    PoolV1,
    PoolV1Alpha2,
    Model,
    ObjectiveX,
    ObjectiveV1Alpha1,
    /// `llm-d.ai/v1alpha2`.
    ObjectiveLlmD,
    Rewrite,
    /// `llm-d.ai/v1alpha2`.
    RewriteLlmD,
    Pod,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::PoolV1,
        Kind::PoolV1Alpha2,
        Kind::Model,
        Kind::ObjectiveX,
        Kind::ObjectiveV1Alpha1,
        Kind::ObjectiveLlmD,
        Kind::Rewrite,
        Kind::RewriteLlmD,
        Kind::Pod,
    ];

    /// `(group, version, kind, plural)` as the API server names them.
    pub fn api(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Kind::PoolV1 => (GROUP_V1, "v1", "InferencePool", "inferencepools"),
            Kind::PoolV1Alpha2 => (GROUP_X, "v1alpha2", "InferencePool", "inferencepools"),
            Kind::Model => (GROUP_X, "v1alpha2", "InferenceModel", "inferencemodels"),
            Kind::ObjectiveX => (
                GROUP_X,
                "v1alpha2",
                "InferenceObjective",
                "inferenceobjectives",
            ),
            Kind::ObjectiveV1Alpha1 => (
                GROUP_V1,
                "v1alpha1",
                "InferenceObjective",
                "inferenceobjectives",
            ),
            Kind::ObjectiveLlmD => (
                GROUP_LLMD,
                "v1alpha2",
                "InferenceObjective",
                "inferenceobjectives",
            ),
            Kind::Rewrite => (
                GROUP_X,
                "v1alpha2",
                "InferenceModelRewrite",
                "inferencemodelrewrites",
            ),
            Kind::RewriteLlmD => (
                GROUP_LLMD,
                "v1alpha2",
                "InferenceModelRewrite",
                "inferencemodelrewrites",
            ),
            Kind::Pod => ("", "v1", "Pod", "pods"),
        }
    }

    /// The kind an `apiVersion`/`kind` pair names, if the collector reads it.
    pub fn of(api_version: &str, kind: &str) -> Option<Kind> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        Kind::ALL.into_iter().find(|k| {
            let (g, v, name, _) = k.api();
            g == group && v == version && name == kind
        })
    }
}

/// What happened to one raw object.
#[derive(Debug)]
pub enum Parsed {
    Ok(Box<Resource>),
    /// A kind the collector does not own (Gateway, HTTPRoute, ConfigMap, ...).
    NotOurs {
        api_version: String,
        kind: String,
    },
    Invalid(String),
}

impl Resource {
    /// Types one object given as JSON (a YAML document or an API response).
    pub fn from_value(value: Value) -> Parsed {
        let field = |name: &str| {
            value
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let (api_version, kind_name) = (field("apiVersion"), field("kind"));
        if api_version.is_empty() || kind_name.is_empty() {
            return Parsed::Invalid("object has no apiVersion or kind".into());
        }
        let Some(kind) = Kind::of(&api_version, &kind_name) else {
            return Parsed::NotOurs {
                api_version,
                kind: kind_name,
            };
        };
        let typed = match kind {
            Kind::PoolV1 => serde_json::from_value(value).map(Resource::PoolV1),
            Kind::PoolV1Alpha2 => serde_json::from_value(value).map(Resource::PoolV1Alpha2),
            Kind::Model => serde_json::from_value(value).map(Resource::Model),
            Kind::ObjectiveX => {
                serde_json::from_value(value).map(|o| Resource::Objective(GROUP_X.into(), o))
            }
            Kind::ObjectiveV1Alpha1 => {
                serde_json::from_value(value).map(|o| Resource::Objective(GROUP_V1.into(), o))
            }
            Kind::ObjectiveLlmD => {
                serde_json::from_value(value).map(|o| Resource::Objective(GROUP_LLMD.into(), o))
            }
            Kind::Rewrite => {
                serde_json::from_value(value).map(|o| Resource::Rewrite(GROUP_X.into(), o))
            }
            Kind::RewriteLlmD => {
                serde_json::from_value(value).map(|o| Resource::Rewrite(GROUP_LLMD.into(), o))
            }
            Kind::Pod => serde_json::from_value(value).map(Resource::Pod),
        };
        match typed {
            Ok(resource) if resource.meta().name.is_empty() => {
                Parsed::Invalid(format!("{kind_name} has no metadata.name"))
            }
            Ok(resource) => Parsed::Ok(Box::new(resource)),
            Err(err) => Parsed::Invalid(format!("{kind_name}: {err}")),
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Resource::PoolV1(o) => &o.metadata,
            Resource::PoolV1Alpha2(o) => &o.metadata,
            Resource::Model(o) => &o.metadata,
            Resource::Objective(_, o) => &o.metadata,
            Resource::Rewrite(_, o) => &o.metadata,
            Resource::Pod(p) => &p.metadata,
        }
    }

    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Resource::PoolV1(o) => &mut o.metadata,
            Resource::PoolV1Alpha2(o) => &mut o.metadata,
            Resource::Model(o) => &mut o.metadata,
            Resource::Objective(_, o) => &mut o.metadata,
            Resource::Rewrite(_, o) => &mut o.metadata,
            Resource::Pod(p) => &mut p.metadata,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Resource::PoolV1(_) => Kind::PoolV1,
            Resource::PoolV1Alpha2(_) => Kind::PoolV1Alpha2,
            Resource::Model(_) => Kind::Model,
            Resource::Objective(group, _) if group == GROUP_X => Kind::ObjectiveX,
            Resource::Objective(group, _) if group == GROUP_LLMD => Kind::ObjectiveLlmD,
            Resource::Objective(_, _) => Kind::ObjectiveV1Alpha1,
            Resource::Rewrite(group, _) if group == GROUP_LLMD => Kind::RewriteLlmD,
            Resource::Rewrite(_, _) => Kind::Rewrite,
            Resource::Pod(_) => Kind::Pod,
        }
    }

    /// `Kind.group/namespace/name` (kubectl's `kind.group`): how messages
    /// name an object that exists in several API groups.
    pub fn qualified_name(&self) -> String {
        let (group, _, kind, _) = self.kind().api();
        let meta = self.meta();
        let kind = if group.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}.{group}")
        };
        format!(
            "{kind}/{}/{}",
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name
        )
    }

    /// `Kind/namespace/name`, how logs and rule sources name an object.
    pub fn display_name(&self) -> String {
        let (_, _, kind, _) = self.kind().api();
        let meta = self.meta();
        format!(
            "{kind}/{}/{}",
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_both_pool_versions_and_ignores_unknown_fields() {
        let v1 = json!({"apiVersion":"inference.networking.k8s.io/v1","kind":"InferencePool",
            "metadata":{"name":"p","namespace":"ns","uid":"x"},
            "spec":{"selector":{"matchLabels":{"app":"a"}},"targetPorts":[{"number":8000}],
                    "endpointPickerRef":{"name":"epp","port":{"number":9002},"failureMode":"FailOpen"},
                    "somethingNew":true}});
        let Parsed::Ok(r) = Resource::from_value(v1) else {
            panic!()
        };
        let Resource::PoolV1(p) = *r else { panic!() };
        assert_eq!(p.spec.target_ports[0].number, Some(8000));
        assert_eq!(
            p.spec.endpoint_picker_ref.unwrap().failure_mode.as_deref(),
            Some("FailOpen")
        );

        let alpha = json!({"apiVersion":"inference.networking.x-k8s.io/v1alpha2","kind":"InferencePool",
            "metadata":{"name":"q"},"spec":{"selector":{"app":"b"},"targetPortNumber":8000}});
        let Parsed::Ok(r) = Resource::from_value(alpha) else {
            panic!()
        };
        assert_eq!(r.kind(), Kind::PoolV1Alpha2);
        assert_eq!(r.display_name(), "InferencePool/default/q");
    }

    #[test]
    fn types_llm_d_objectives_and_rewrites_keeping_their_group() {
        for (kind_name, kind) in [
            ("InferenceObjective", Kind::ObjectiveLlmD),
            ("InferenceModelRewrite", Kind::RewriteLlmD),
        ] {
            let value = json!({"apiVersion":"llm-d.ai/v1alpha2","kind":kind_name,
                "metadata":{"name":"o","namespace":"ns"},"spec":{"poolRef":{"name":"p"}}});
            let Parsed::Ok(r) = Resource::from_value(value) else {
                panic!("{kind_name}")
            };
            assert_eq!(r.kind(), kind);
            assert_eq!(r.display_name(), format!("{kind_name}/ns/o"));
            assert_eq!(r.qualified_name(), format!("{kind_name}.llm-d.ai/ns/o"));
        }
        assert_eq!(
            Kind::of("llm-d.ai/v1alpha1", "InferenceObjective"),
            None,
            "only the served version"
        );
    }

    #[test]
    fn foreign_kinds_are_not_ours_and_bad_shapes_are_invalid() {
        let route = json!({"apiVersion":"gateway.networking.k8s.io/v1","kind":"HTTPRoute","metadata":{"name":"r"}});
        assert!(matches!(
            Resource::from_value(route),
            Parsed::NotOurs { .. }
        ));
        let bad = json!({"apiVersion":"inference.networking.x-k8s.io/v1alpha2","kind":"InferenceModel",
            "metadata":{"name":"m"},"spec":{"targetModels":"not a list"}});
        match Resource::from_value(bad) {
            Parsed::Invalid(msg) => assert!(msg.contains("InferenceModel"), "{msg}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Resource::from_value(json!({"kind":"Pod"})),
            Parsed::Invalid(_)
        ));
    }

    #[test]
    fn pod_readiness_needs_ready_true_and_no_deletion() {
        let mut pod: Pod = serde_json::from_value(json!({"metadata":{"name":"a"},
            "status":{"podIP":"10.0.0.1","conditions":[{"type":"Ready","status":"True"}]}}))
        .unwrap();
        assert!(pod.is_ready());
        pod.metadata.deletion_timestamp = Some("2025-01-01T00:00:00Z".into());
        assert!(!pod.is_ready());
        pod.metadata.deletion_timestamp = None;
        pod.status.conditions[0].status = "False".into();
        assert!(!pod.is_ready());
    }
}
