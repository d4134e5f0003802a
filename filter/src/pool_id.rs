//! How the filter names an InferencePool: by namespace and name.
//!
//! Two teams that install the GIE chart in two namespaces get pools of the
//! same name, so a bare name does not identify a pool. Everything the filter
//! keys by pool uses the pool's id `namespace/name` ([`pool_id`]): shared-data
//! tables ([`shared_key`], the one place such keys are made), stats labels and
//! logs. Kubernetes namespaces are DNS labels and names DNS subdomains, so
//! neither holds a `/` and the id splits back unambiguously ([`split`]).
//!
//! A reference to a pool (a `cluster_pools` value, or an Envoy cluster name
//! that is not listed there) is either `namespace/name` or a bare name; a
//! bare name resolves while exactly one namespace has a pool of that name
//! ([`PoolRef`], [`crate::state::StateView::resolve`]).

/// The pool's id, `namespace/name`; the bare name when the namespace is
/// empty (a collector from before pools were namespaced).
pub fn pool_id(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_owned()
    } else {
        format!("{namespace}/{name}")
    }
}

/// `(namespace, name)` of an id made by [`pool_id`] (`""` namespace for a
/// bare name).
pub fn split(id: &str) -> (&str, &str) {
    id.split_once('/').unwrap_or(("", id))
}

/// The shared-data key of one per-pool table (`inflight`, `pending.<bucket>`,
/// ...): `<key_prefix>.<table>.<namespace>/<name>`, plus `.<suffix>` when one
/// is given. Every per-pool key goes through here, so pools of the same name
/// in two namespaces never share a table.
pub fn shared_key(key_prefix: &str, table: &str, pool_id: &str, suffix: Option<&str>) -> String {
    match suffix {
        Some(suffix) => format!("{key_prefix}.{table}.{pool_id}.{suffix}"),
        None => format!("{key_prefix}.{table}.{pool_id}"),
    }
}

/// A reference to a pool as configuration writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolRef<'a> {
    /// `namespace/name`: exactly that pool.
    Qualified { namespace: &'a str, name: &'a str },
    /// A bare name: the pool of that name while only one namespace has one.
    Bare(&'a str),
}

impl<'a> PoolRef<'a> {
    /// Reads a `cluster_pools` value: `namespace/name` or a bare name.
    pub fn parse(text: &'a str) -> Result<Self, String> {
        match text.split_once('/') {
            None if text.is_empty() => Err("must name a pool".into()),
            None => Ok(PoolRef::Bare(text)),
            Some((namespace, name))
                if namespace.is_empty() || name.is_empty() || name.contains('/') =>
            {
                Err(format!(
                    "{text:?} is neither \"namespace/name\" nor a bare pool name"
                ))
            }
            Some((namespace, name)) => Ok(PoolRef::Qualified { namespace, name }),
        }
    }

    /// How logs and error messages show the reference.
    pub fn display(&self) -> String {
        match self {
            PoolRef::Qualified { namespace, name } => pool_id(namespace, name),
            PoolRef::Bare(name) => (*name).to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn ids_split_back_and_keys_differ_per_namespace() {
        assert_eq!(pool_id("team-a", "llm"), "team-a/llm");
        assert_eq!(pool_id("", "llm"), "llm");
        assert_eq!(split("team-a/llm.v1"), ("team-a", "llm.v1"));
        assert_eq!(split("llm"), ("", "llm"));
        assert_eq!(
            shared_key("llmgw", "inflight", "team-a/llm", None),
            "llmgw.inflight.team-a/llm"
        );
        assert_eq!(
            shared_key("llmgw", "pending", "team-a/llm", Some("7")),
            "llmgw.pending.team-a/llm.7"
        );
        assert_ne!(
            shared_key("llmgw", "inflight", &pool_id("team-a", "llm"), None),
            shared_key("llmgw", "inflight", &pool_id("team-b", "llm"), None)
        );
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn references_parse_qualified_or_bare() {
        assert_eq!(
            PoolRef::parse("team-a/llm"),
            Ok(PoolRef::Qualified {
                namespace: "team-a",
                name: "llm"
            })
        );
        assert_eq!(PoolRef::parse("llm"), Ok(PoolRef::Bare("llm")));
        for bad in ["", "/llm", "team-a/", "a/b/c", "/"] {
            assert!(PoolRef::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(PoolRef::parse("a/b").unwrap().display(), "a/b");
    }
}
