//! Counters and the call log: what every test asserts on ("exactly N token fetches for this
//! account"). Counters are per (appid, endpoint) and never dropped while the account exists;
//! deleting the account drops them. Calls that name no existing account are counted under the
//! appid `""`, so counter keys are bounded by (accounts + 1) × endpoints. The log is a ring
//! buffer of the most recent calls (cap: `SimLimits::call_log`).
//!
//! Nothing secret is recorded: no query strings, no bodies, no tokens.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

/// One call as logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallRecord {
    /// Sequence number (1-based, over the simulator's life).
    pub seq: u64,
    /// Simulator time (Unix ms).
    pub at_ms: i64,
    /// The account the call was attributed to ("" when none could be).
    pub appid: String,
    /// Endpoint path.
    pub endpoint: String,
    /// HTTP method.
    pub method: String,
    /// errcode answered (0 for success; the HTML page's code for authorize errors).
    pub errcode: i64,
    /// HTTP status answered (0 when the connection was dropped).
    pub http_status: u16,
    /// The caller's IP.
    pub caller_ip: String,
    /// The fault that shaped the answer, if any (`errcode`, `http_status`, `latency`,
    /// `timeout`, `drop`).
    pub fault: Option<String>,
}

/// Per (appid, endpoint) totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counter {
    /// Every call.
    pub calls: u64,
    /// Calls answered with success (including calls only delayed by a `latency` fault).
    pub ok: u64,
    /// Calls answered with an error, an error-producing fault, or a dropped connection.
    pub errors: u64,
}

/// A counter row as the control API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CounterRow {
    /// Account ("" for calls that named no known account).
    pub appid: String,
    /// Endpoint path.
    pub endpoint: String,
    /// Totals.
    #[serde(flatten)]
    pub counter: Counter,
}

/// Counters plus the bounded log.
#[derive(Debug)]
pub struct CallLog {
    cap: usize,
    next_seq: u64,
    log: VecDeque<CallRecord>,
    counters: BTreeMap<(String, String), Counter>,
}

impl CallLog {
    /// An empty log keeping at most `cap` records.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            next_seq: 1,
            log: VecDeque::new(),
            counters: BTreeMap::new(),
        }
    }

    /// Records one call.
    pub fn record(&mut self, mut rec: CallRecord) {
        rec.seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        let c = self
            .counters
            .entry((rec.appid.clone(), rec.endpoint.clone()))
            .or_default();
        c.calls = c.calls.saturating_add(1);
        // A latency fault only delays the call, which then runs normally: its outcome counts.
        let fault_ok = matches!(rec.fault.as_deref(), None | Some("latency"));
        if rec.errcode == 0 && fault_ok && (200..400).contains(&rec.http_status) {
            c.ok = c.ok.saturating_add(1);
        } else {
            c.errors = c.errors.saturating_add(1);
        }
        if self.cap == 0 {
            return;
        }
        while self.log.len() >= self.cap {
            self.log.pop_front();
        }
        self.log.push_back(rec);
    }

    /// Totals for one (appid, endpoint).
    pub fn counter(&self, appid: &str, endpoint: &str) -> Counter {
        self.counters
            .get(&(appid.to_owned(), endpoint.to_owned()))
            .copied()
            .unwrap_or_default()
    }

    /// Counter rows, optionally filtered.
    pub fn rows(&self, appid: Option<&str>, endpoint: Option<&str>) -> Vec<CounterRow> {
        self.counters
            .iter()
            .filter(|((a, e), _)| appid.is_none_or(|x| x == a) && endpoint.is_none_or(|x| x == e))
            .map(|((a, e), c)| CounterRow {
                appid: a.clone(),
                endpoint: e.clone(),
                counter: *c,
            })
            .collect()
    }

    /// The most recent `limit` records, oldest first, optionally filtered.
    pub fn recent(
        &self,
        appid: Option<&str>,
        endpoint: Option<&str>,
        limit: usize,
    ) -> Vec<CallRecord> {
        let mut out: Vec<CallRecord> = self
            .log
            .iter()
            .rev()
            .filter(|r| {
                appid.is_none_or(|x| x == r.appid) && endpoint.is_none_or(|x| x == r.endpoint)
            })
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// Drops counters and log entries of one account.
    pub fn forget_account(&mut self, appid: &str) {
        self.counters.retain(|(a, _), _| a != appid);
        self.log.retain(|r| r.appid != appid);
    }

    /// Clears everything.
    pub fn clear(&mut self) {
        self.log.clear();
        self.counters.clear();
    }
}
