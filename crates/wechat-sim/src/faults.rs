//! Fault injection: make an endpoint (optionally for one account) answer an error code, an
//! HTTP 5xx, slowly, not at all (hold past the client's timeout, then drop), or drop the
//! connection — for the next N calls, or with a probability drawn from a seeded RNG.
//!
//! Rules are checked in creation order; the first that fires wins. Latency is the only fault
//! that lets the call proceed afterwards (it simulates a slow network), and it and `timeout`
//! are the only places the simulator sleeps on an API call — with real `tokio::time::sleep`,
//! because the client's timeouts are real.

use rand::RngExt;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::error::SimError;

/// What a fault does to a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultAction {
    /// HTTP 200 `{"errcode": code, "errmsg": ...}` (the authorize page shows an HTML error page).
    Errcode {
        /// Any code: -1, 45011, 40164, ...
        code: i64,
        /// errmsg without rid; the code's usual text when absent.
        #[serde(default)]
        errmsg: Option<String>,
    },
    /// An HTTP status (e.g. 502) with a short non-JSON body.
    HttpStatus {
        /// The status code (100..=999).
        status: u16,
    },
    /// Waits `ms` (real time), then processes the call normally.
    Latency {
        /// Added delay.
        ms: u64,
    },
    /// Holds the request `ms` (real time; set it above the client's timeout), then drops the
    /// connection without answering.
    Timeout {
        /// How long to hold.
        ms: u64,
    },
    /// Closes the connection without a response.
    Drop,
}

impl FaultAction {
    /// Short name for the call log.
    pub fn name(&self) -> &'static str {
        match self {
            FaultAction::Errcode { .. } => "errcode",
            FaultAction::HttpStatus { .. } => "http_status",
            FaultAction::Latency { .. } => "latency",
            FaultAction::Timeout { .. } => "timeout",
            FaultAction::Drop => "drop",
        }
    }
}

/// A fault rule as created through the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Endpoint path (`/cgi-bin/token`); every endpoint when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Account; every account when absent.
    #[serde(default)]
    pub appid: Option<String>,
    /// What happens.
    pub action: FaultAction,
    /// Fires on each of the next `next` matching calls, then the rule is removed.
    #[serde(default)]
    pub next: Option<u32>,
    /// Fires with this probability (0..=1) on each matching call; with `next`, at most `next`
    /// times.
    #[serde(default)]
    pub rate: Option<f64>,
}

/// A stored rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultRule {
    /// Id for deletion.
    pub id: u64,
    /// The rule.
    #[serde(flatten)]
    pub spec: FaultSpec,
    /// Times it fired.
    pub fired: u64,
}

/// The rule set and its RNG.
#[derive(Debug)]
pub struct Faults {
    rules: Vec<FaultRule>,
    next_id: u64,
    rng: StdRng,
}

impl Faults {
    /// No rules.
    pub fn new(rng: StdRng) -> Self {
        Self {
            rules: Vec::new(),
            next_id: 1,
            rng,
        }
    }

    /// Adds a rule; rejects nonsense (rate outside 0..=1, `next: 0`, neither trigger,
    /// invalid status) with `SimError::Invalid`, and a rule beyond `max_rules` with
    /// `SimError::Capacity`.
    pub fn add(&mut self, spec: FaultSpec, max_rules: usize) -> Result<u64, SimError> {
        if let Some(rate) = spec.rate
            && !(0.0..=1.0).contains(&rate)
        {
            return Err(SimError::invalid("rate must be between 0 and 1"));
        }
        if spec.next == Some(0) {
            return Err(SimError::invalid("next must be at least 1"));
        }
        if spec.next.is_none() && spec.rate.is_none() {
            return Err(SimError::invalid(
                "give next (deterministic) and/or rate (probabilistic)",
            ));
        }
        if let FaultAction::HttpStatus { status } = spec.action
            && !(100..=999).contains(&status)
        {
            return Err(SimError::invalid("status must be 100..=999"));
        }
        if self.rules.len() >= max_rules {
            return Err(SimError::Capacity {
                what: format!("max_faults = {max_rules}"),
            });
        }
        let id = self.next_id;
        self.next_id = self.next_id.saturating_add(1);
        self.rules.push(FaultRule { id, spec, fired: 0 });
        Ok(id)
    }

    /// Removes one rule.
    pub fn remove(&mut self, id: u64) -> bool {
        let before = self.rules.len();
        self.rules.retain(|r| r.id != id);
        self.rules.len() != before
    }

    /// Removes every rule.
    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// Restarts the RNG from `seed`, so a probabilistic sequence repeats exactly.
    pub fn reseed(&mut self, seed: u64) {
        self.rng = StdRng::seed_from_u64(seed);
    }

    /// The rules.
    pub fn list(&self) -> Vec<FaultRule> {
        self.rules.clone()
    }

    /// The fault (if any) for a call to `endpoint` attributed to `appid`. Every matching
    /// probabilistic rule draws once per call, so a sequence depends only on the seed and the
    /// calls made.
    pub fn pick(&mut self, endpoint: &str, appid: Option<&str>) -> Option<FaultAction> {
        let mut chosen = None;
        for rule in &mut self.rules {
            let s = &rule.spec;
            if s.endpoint.as_deref().is_some_and(|e| e != endpoint) {
                continue;
            }
            if let Some(want) = s.appid.as_deref()
                && appid != Some(want)
            {
                continue;
            }
            let fires = match s.rate {
                Some(rate) => self.rng.random::<f64>() < rate,
                None => true,
            };
            if fires && chosen.is_none() {
                rule.fired += 1;
                if let Some(n) = rule.spec.next.as_mut() {
                    *n -= 1;
                }
                chosen = Some(rule.spec.action.clone());
            }
        }
        self.rules.retain(|r| r.spec.next != Some(0));
        chosen
    }
}
