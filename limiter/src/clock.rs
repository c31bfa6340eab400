//! Where "now" comes from: Redis `TIME` (the default) or a clock the caller moves.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Where "now" comes from.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum Clock {
    /// Redis `TIME`, read inside the script: every client agrees, whatever its own clock says.
    #[default]
    Redis,
    /// A clock the caller moves (tests, simulations): its reading is sent with each call.
    Manual(ManualClock),
}

impl Clock {
    /// The `now` argument of a script call: 0 asks the script to read Redis `TIME`.
    pub(crate) fn script_now_us(&self) -> u64 {
        match self {
            Clock::Redis => 0,
            Clock::Manual(clock) => clock.now_us(),
        }
    }

    /// "Now" for the local fallback: the manual reading, or this machine's clock in place of
    /// Redis `TIME`.
    pub(crate) fn local_now_us(&self) -> u64 {
        match self {
            Clock::Manual(clock) => clock.now_us(),
            Clock::Redis => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
        }
    }
}

/// A settable clock in microseconds since the Unix epoch, shared by clones.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock reading `now_us`.
    pub fn new(now_us: u64) -> Self {
        Self(Arc::new(AtomicU64::new(now_us)))
    }

    /// The current reading.
    pub fn now_us(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Set the reading.
    pub fn set_us(&self, now_us: u64) {
        self.0.store(now_us, Ordering::SeqCst);
    }

    /// Move forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_micros() as u64, Ordering::SeqCst);
    }
}
