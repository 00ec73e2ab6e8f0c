//! Cooperative shutdown: which refreshes are in flight, and refusing new ones once shutdown
//! begins.
//!
//! Aborting a refresh mid-call wastes a token fetch — WeChat has already superseded the old
//! token by the time its answer would have been written — so shutting down lets every refresh
//! in flight (and every write-back being retried) finish within a deadline
//! ([`crate::SchedulerConfig::shutdown_grace`]) and starts no new one. Each refresh holds an
//! [`InFlightGuard`] from before its claim to the end of its write-back.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

/// Where the engine stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Refreshes start as usual.
    Running,
    /// Shutting down: no refresh starts; those in flight finish.
    Draining,
    /// The deadline passed or everything finished: retries stop too.
    Stopped,
}

/// The count of refreshes in flight and the engine's phase. Shared by the service's clones.
#[derive(Debug)]
pub(crate) struct InFlight {
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    count: AtomicUsize,
    idle: Notify,
    phase: watch::Sender<Phase>,
}

/// One refresh (or write-back retry) in flight; dropping it ends it.
#[derive(Debug)]
pub(crate) struct InFlightGuard {
    state: Arc<State>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.state.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.state.idle.notify_waiters();
        }
    }
}

impl InFlight {
    pub fn new() -> Self {
        Self {
            state: Arc::new(State {
                count: AtomicUsize::new(0),
                idle: Notify::new(),
                phase: watch::channel(Phase::Running).0,
            }),
        }
    }

    /// Starts a refresh, unless shutdown has begun.
    pub fn enter(&self) -> Option<InFlightGuard> {
        // Counted before the phase is read: a drain that began meanwhile either sees this
        // refresh in the count and waits for it, or this refresh sees the drain and leaves.
        let guard = self.enter_always();
        (*self.state.phase.borrow() == Phase::Running).then_some(guard)
    }

    /// Continues work a refresh in flight started (its write-back's retries): counted, and
    /// waited for by a drain, but not refused by one.
    pub fn enter_always(&self) -> InFlightGuard {
        self.state.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard {
            state: self.state.clone(),
        }
    }

    pub fn phase(&self) -> Phase {
        *self.state.phase.borrow()
    }

    /// A receiver of phase changes.
    pub fn watch(&self) -> watch::Receiver<Phase> {
        self.state.phase.subscribe()
    }

    /// Refuses new refreshes and waits, at most `grace`, for those in flight. Returns how many
    /// were still in flight at the deadline (0: all finished). Afterwards the phase is
    /// [`Phase::Stopped`].
    pub async fn drain(&self, grace: Duration) -> usize {
        self.state.phase.send_if_modified(|phase| {
            let running = *phase == Phase::Running;
            if running {
                *phase = Phase::Draining;
            }
            running
        });
        let deadline = tokio::time::Instant::now() + grace;
        let left = loop {
            let idle = self.state.idle.notified();
            tokio::pin!(idle);
            // Registered before the count is read, so the last guard's notification is not
            // missed between the two.
            idle.as_mut().enable();
            let count = self.state.count.load(Ordering::SeqCst);
            if count == 0 {
                break 0;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                break self.state.count.load(Ordering::SeqCst);
            }
        };
        self.state.phase.send_replace(Phase::Stopped);
        left
    }
}
