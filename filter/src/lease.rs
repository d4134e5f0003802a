//! The lease that elects one worker per Envoy to hold the collector stream:
//! `{holder_id}:{expires_ms}` in shared data, renewed under CAS every tick.

/// A parsed lease value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub expires_ms: u64,
}

/// What a worker does with the lease on a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseDecision {
    /// It is ours: extend it.
    Renew,
    /// Missing, unreadable or expired: take it.
    Take,
    /// Someone else holds it and it is live.
    Other,
}

impl Lease {
    pub fn encode(&self) -> Vec<u8> {
        format!("{}:{}", self.holder, self.expires_ms).into_bytes()
    }

    pub fn parse(bytes: &[u8]) -> Option<Lease> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (holder, expires) = text.rsplit_once(':')?;
        if holder.is_empty() {
            return None;
        }
        Some(Lease {
            holder: holder.to_owned(),
            expires_ms: expires.parse().ok()?,
        })
    }

    /// The decision for worker `me` at host time `now_ms` given the current
    /// value of the lease key.
    pub fn decide(current: Option<&[u8]>, me: &str, now_ms: u64) -> LeaseDecision {
        match current.and_then(Lease::parse) {
            Some(lease) if lease.holder == me => LeaseDecision::Renew,
            Some(lease) if lease.expires_ms > now_ms => LeaseDecision::Other,
            _ => LeaseDecision::Take,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn lease_decisions() {
        let lease = Lease {
            holder: "w1".into(),
            expires_ms: 1_000,
        }
        .encode();
        assert_eq!(
            Lease::decide(Some(&lease), "w1", 5_000),
            LeaseDecision::Renew
        );
        assert_eq!(Lease::decide(Some(&lease), "w2", 999), LeaseDecision::Other);
        assert_eq!(
            Lease::decide(Some(&lease), "w2", 1_000),
            LeaseDecision::Take
        );
        assert_eq!(Lease::decide(None, "w2", 0), LeaseDecision::Take);
        assert_eq!(Lease::decide(Some(b"junk"), "w2", 0), LeaseDecision::Take);
        assert_eq!(Lease::decide(Some(b":5"), "w2", 0), LeaseDecision::Take);
        assert_eq!(
            Lease::parse(b"t1:c2:77"),
            Some(Lease {
                holder: "t1:c2".into(),
                expires_ms: 77
            })
        );
    }
}
