//! A source thread's way into the pool: offering seed blocks, and seeing
//! whether the pool wants them.

use std::{
    sync::{
        Arc, Condvar, Mutex, PoisonError,
        mpsc::{SyncSender, TrySendError},
    },
    time::Instant,
};

use super::{SeedBlock, SourceStatus, lock};

/// What a source thread holds: its status and the way into the pool.
#[derive(Clone)]
pub(crate) struct SourceHandle {
    /// The source's index in the pool.
    pub(crate) index: usize,
    /// Its shared status.
    pub(crate) status: Arc<SourceStatus>,
    pub(super) tx: SyncSender<SeedBlock>,
    pub(super) demand: Arc<Demand>,
}

impl SourceHandle {
    /// Hand a seed block to the pool, waiting while the channel is full.
    /// Returns false once the pool is gone.
    pub(crate) fn send(&self, block: SeedBlock) -> bool {
        self.tx.send(block).is_ok()
    }

    /// A counter that moves whenever the pool looks for a seed block, takes
    /// one, or waits another moment for one: a source that sees it move knows
    /// seeds are wanted now.
    pub(crate) fn demand(&self) -> u64 {
        *lock(&self.demand.count)
    }

    /// Hand a seed block to the pool, waiting until `deadline` for room. A
    /// block that does not fit by then is dropped (and zeroized): the pool
    /// has enough queued.
    pub(crate) fn offer(&self, mut block: SeedBlock, deadline: Instant) -> Offer {
        loop {
            let seen = self.demand();
            block = match self.tx.try_send(block) {
                Ok(()) => return Offer::Taken,
                Err(TrySendError::Disconnected(_)) => return Offer::Gone,
                Err(TrySendError::Full(b)) => b,
            };
            if !self.demand.wait_change(seen, deadline) {
                return Offer::Full;
            }
        }
    }
}

/// How the pool tells source threads that it wants seeds.
#[derive(Default)]
pub(super) struct Demand {
    count: Mutex<u64>,
    moved: Condvar,
}

impl Demand {
    pub(super) fn bump(&self) {
        *lock(&self.count) += 1;
        self.moved.notify_all();
    }

    /// Wait until the count is no longer `seen`; false if `deadline` came first.
    fn wait_change(&self, seen: u64, deadline: Instant) -> bool {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let (count, _) = self
            .moved
            .wait_timeout_while(lock(&self.count), timeout, |c| *c == seen)
            .unwrap_or_else(PoisonError::into_inner);
        *count != seen
    }
}

/// What became of an offered seed block.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Offer {
    /// Queued for the DRBG.
    Taken,
    /// The queue is full; the block was dropped.
    Full,
    /// The pool is gone.
    Gone,
}
