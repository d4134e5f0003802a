//! Injected failures of one simulated pod, set by flags at start and changed at
//! run time with `POST /admin/faults`. Gateway reliability tests use them to
//! make a pod slow, erroring, hung, blind to scrapes or stuck.

use serde::{Deserialize, Serialize};

/// The faults in force on a pod.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Faults {
    /// Share of inference requests answered with an error, 0..=1.
    pub error_rate: f64,
    /// Status codes to pick from (uniformly) for injected errors.
    pub error_codes: Vec<u16>,
    /// Delay before an inference request is handled.
    pub extra_latency_ms: u64,
    /// Inference requests never get an answer (until the client gives up).
    pub hang: bool,
    /// Delay before `/metrics` answers.
    pub metrics_delay_ms: u64,
    /// `/metrics` answers 500.
    pub metrics_fail: bool,
    /// `/health` answers 503.
    pub health_fail: bool,
    /// The engine stops stepping; requests pile up in `waiting`.
    pub pause_engine: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_rate: 0.0,
            error_codes: vec![500],
            extra_latency_ms: 0,
            hang: false,
            metrics_delay_ms: 0,
            metrics_fail: false,
            health_fail: false,
            pause_engine: false,
        }
    }
}

/// A partial update: omitted fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsPatch {
    pub error_rate: Option<f64>,
    pub error_codes: Option<Vec<u16>>,
    pub extra_latency_ms: Option<u64>,
    pub hang: Option<bool>,
    pub metrics_delay_ms: Option<u64>,
    pub metrics_fail: Option<bool>,
    pub health_fail: Option<bool>,
    pub pause_engine: Option<bool>,
}

/// Longest injected delay (one hour): keeps typos from wedging a test run.
pub const MAX_DELAY_MS: u64 = 3_600_000;

impl FaultsPatch {
    /// Checks every given field; nothing is applied if one is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(r) = self.error_rate {
            if !(0.0..=1.0).contains(&r) {
                return Err(format!("error_rate must be within [0, 1], got {r}"));
            }
        }
        if let Some(codes) = &self.error_codes {
            if codes.is_empty() {
                return Err("error_codes must not be empty".into());
            }
            if let Some(c) = codes.iter().find(|c| !(400..=599).contains(*c)) {
                return Err(format!(
                    "error_codes must be HTTP error statuses 400-599, got {c}"
                ));
            }
        }
        for (name, v) in [
            ("extra_latency_ms", self.extra_latency_ms),
            ("metrics_delay_ms", self.metrics_delay_ms),
        ] {
            if v.is_some_and(|v| v > MAX_DELAY_MS) {
                return Err(format!("{name} must be at most {MAX_DELAY_MS}"));
            }
        }
        Ok(())
    }

    /// Applies a validated patch.
    pub fn apply(&self, faults: &mut Faults) -> Result<(), String> {
        self.validate()?;
        if let Some(v) = self.error_rate {
            faults.error_rate = v;
        }
        if let Some(v) = &self.error_codes {
            faults.error_codes = v.clone();
        }
        if let Some(v) = self.extra_latency_ms {
            faults.extra_latency_ms = v;
        }
        if let Some(v) = self.hang {
            faults.hang = v;
        }
        if let Some(v) = self.metrics_delay_ms {
            faults.metrics_delay_ms = v;
        }
        if let Some(v) = self.metrics_fail {
            faults.metrics_fail = v;
        }
        if let Some(v) = self.health_fail {
            faults.health_fail = v;
        }
        if let Some(v) = self.pause_engine {
            faults.pause_engine = v;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_patch_changes_nothing() {
        let mut f = Faults::default();
        let patch = FaultsPatch {
            hang: Some(true),
            error_rate: Some(2.0),
            ..Default::default()
        };
        assert!(patch.apply(&mut f).is_err());
        assert_eq!(f, Faults::default());
    }

    #[test]
    fn omitted_fields_stay() {
        let mut f = Faults {
            metrics_fail: true,
            ..Faults::default()
        };
        let patch: FaultsPatch =
            serde_json::from_str(r#"{"error_rate":0.5,"error_codes":[503]}"#).unwrap();
        patch.apply(&mut f).unwrap();
        assert!(f.metrics_fail);
        assert_eq!(f.error_codes, vec![503]);
        assert!(serde_json::from_str::<FaultsPatch>(r#"{"nope":1}"#).is_err());
    }
}
