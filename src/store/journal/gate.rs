//! The journal's gate: held shared by a small write from before its append until its
//! version is visible, and exclusively by what changes many paths at once (a collection's
//! removal) and, for an instant, by a checkpoint: so a checkpoint's sync covers every
//! version it retires. A writer waiting keeps new readers out (writer-preferring).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::Journal;

/// Who holds the gate, and who waits for it.
#[derive(Default)]
struct Holders {
    /// Shared holds.
    readers: usize,
    /// Whether an exclusive hold is taken.
    writer: bool,
    /// Exclusive holds waited for.
    writers_waiting: usize,
}

/// A writer-preferring lock whose shared holds may move between threads (tokio's and std's
/// guards may not outlive a thread's borrow, or be had without an async context).
#[derive(Default)]
pub(super) struct Gate {
    holders: Mutex<Holders>,
    changed: Condvar,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, Holders> {
        self.holders.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A shared hold, once no writer holds the gate or waits for it.
    pub(super) fn shared(&self) {
        let holders = self.lock();
        let mut holders = self
            .changed
            .wait_while(holders, |h| h.writer || h.writers_waiting > 0)
            .unwrap_or_else(|e| e.into_inner());
        holders.readers += 1;
    }

    /// A shared hold if it is to be had without waiting.
    pub(super) fn try_shared(&self) -> bool {
        let mut holders = self.lock();
        if holders.writer || holders.writers_waiting > 0 {
            return false;
        }
        holders.readers += 1;
        true
    }

    /// The exclusive hold, once every shared one is let go.
    pub(super) fn exclusive(&self) -> Exclusive<'_> {
        let mut holders = self.lock();
        holders.writers_waiting += 1;
        let mut holders = self
            .changed
            .wait_while(holders, |h| h.writer || h.readers > 0)
            .unwrap_or_else(|e| e.into_inner());
        holders.writers_waiting -= 1;
        holders.writer = true;
        Exclusive(self)
    }

    /// How many exclusive holds are waited for (for tests that wait for a waiter).
    #[cfg(test)]
    pub(super) fn writers_waiting(&self) -> usize {
        self.lock().writers_waiting
    }

    fn leave_shared(&self) {
        let mut holders = self.lock();
        holders.readers -= 1;
        if holders.readers == 0 && holders.writers_waiting > 0 {
            self.changed.notify_all();
        }
    }
}

/// A shared hold of the journal's gate; it may move between threads.
pub struct Shared(pub(super) Arc<Journal>);

impl Drop for Shared {
    fn drop(&mut self) {
        self.0.gate.leave_shared();
    }
}

/// An exclusive hold of the journal's gate.
pub struct Exclusive<'a>(&'a Gate);

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        self.0.lock().writer = false;
        self.0.changed.notify_all();
    }
}
