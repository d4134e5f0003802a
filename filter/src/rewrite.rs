//! Model rewriting: InferenceModel `targetModels` and InferenceModelRewrite
//! rules choose the model the pod is asked for, by weight.

use crate::state::{ModelRuleView, PoolView};

/// The outcome of applying a pool's rules to a requested model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelChoice<'p> {
    /// The rule that matched, if any (exact before generic).
    pub rule: Option<&'p ModelRuleView>,
    /// The model to send upstream; the requested one when no target applies.
    pub target_model: String,
}

impl ModelChoice<'_> {
    pub fn rewritten(&self, requested: &str) -> bool {
        self.target_model != requested
    }
}

/// The first rule naming `model` exactly, else the first generic rule.
pub fn matching_rule<'p>(pool: &'p PoolView, model: &str) -> Option<&'p ModelRuleView> {
    pool.rules
        .iter()
        .find(|r| r.model.as_deref() == Some(model))
        .or_else(|| pool.rules.iter().find(|r| r.model.is_none()))
}

/// Applies the pool's rules; `draw` picks among weighted targets
/// (share = weight / sum), so the same draw gives the same target.
pub fn choose_target<'p>(pool: &'p PoolView, model: &str, draw: u64) -> ModelChoice<'p> {
    let rule = matching_rule(pool, model);
    let target_model = rule
        .and_then(|r| weighted_target(r, draw))
        .unwrap_or(model)
        .to_owned();
    ModelChoice { rule, target_model }
}

fn weighted_target(rule: &ModelRuleView, draw: u64) -> Option<&str> {
    let total: u64 = rule.targets.iter().map(|t| u64::from(t.weight)).sum();
    if total == 0 {
        // All weights zero (or unset): an even split is the only sensible reading.
        let n = rule.targets.len() as u64;
        let i = usize::try_from(draw.checked_rem(n)?).ok()?;
        return rule.targets.get(i).map(|t| t.model.as_str());
    }
    let mut point = draw % total;
    for target in &rule.targets {
        let w = u64::from(target.weight);
        if point < w {
            return Some(target.model.as_str());
        }
        point -= w;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::pool;
    use pool_state::{ModelRule, WeightedTarget};

    fn rule(model: &str, targets: &[(&str, u32)]) -> ModelRule {
        ModelRule {
            model: model.into(),
            targets: targets
                .iter()
                .map(|(m, w)| WeightedTarget {
                    model: (*m).into(),
                    weight: *w,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn view(rules: Vec<ModelRule>) -> PoolView {
        let mut p = pool("p", vec![]);
        p.model_rules = rules;
        PoolView::from_pool(&p)
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn weighted_split_is_exact_over_the_draw_space() {
        let p = view(vec![rule("travelhelper", &[("v1", 90), ("v2", 10)])]);
        let mut v2 = 0;
        for draw in 0..1000u64 {
            let c = choose_target(&p, "travelhelper", draw);
            assert!(c.rewritten("travelhelper"));
            if c.target_model == "v2" {
                v2 += 1;
            }
        }
        assert_eq!(v2, 100);
        assert_eq!(choose_target(&p, "travelhelper", 95).target_model, "v2");
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn exact_beats_generic_and_no_rule_keeps_the_model() {
        let p = view(vec![
            rule("", &[("generic", 1)]),
            rule("a", &[("exact", 1)]),
        ]);
        assert_eq!(choose_target(&p, "a", 0).target_model, "exact");
        assert_eq!(choose_target(&p, "b", 0).target_model, "generic");
        let none = view(vec![rule("a", &[("x", 1)])]);
        let c = choose_target(&none, "b", 0);
        assert_eq!((c.rule, c.target_model.as_str()), (None, "b"));
        // A rule without targets matches (criticality) but keeps the model.
        let keep = view(vec![rule("a", &[])]);
        let c = choose_target(&keep, "a", 3);
        assert!(c.rule.is_some());
        assert!(!c.rewritten("a"));
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn zero_weights_split_evenly() {
        let p = view(vec![rule("a", &[("x", 0), ("y", 0)])]);
        assert_eq!(choose_target(&p, "a", 0).target_model, "x");
        assert_eq!(choose_target(&p, "a", 1).target_model, "y");
        assert_eq!(choose_target(&p, "a", u64::MAX).target_model, "y");
    }
}
