//! Per-path write locks: writers of one path take turns; readers never wait.
//!
//! A fixed table of async mutexes indexed by a hash of the path: two paths may share a slot
//! and then merely take turns, which is harmless, and the table never grows.

use std::hash::{BuildHasher, RandomState};

use tokio::sync::{Mutex, MutexGuard};

const SLOTS: usize = 256;

/// The lock table.
pub struct Locks {
    slots: Vec<Mutex<()>>,
    hasher: RandomState,
}

impl Locks {
    /// An empty table.
    pub fn new() -> Self {
        Locks { slots: (0..SLOTS).map(|_| Mutex::new(())).collect(), hasher: RandomState::new() }
    }

    /// Waits for the lock of `key` (a path without its trailing slash).
    pub async fn lock(&self, key: &str) -> MutexGuard<'_, ()> {
        let slot = self.hasher.hash_one(key.trim_end_matches('/')) as usize % SLOTS;
        self.slots[slot].lock().await
    }

    /// The locks of two keys, taken in one order whoever asks (and once, when they share a
    /// slot), so that two writers of the same pair never wait for each other.
    pub async fn lock_two(&self, a: &str, b: &str) -> Vec<MutexGuard<'_, ()>> {
        let slot = |key: &str| self.hasher.hash_one(key.trim_end_matches('/')) as usize % SLOTS;
        let (mut first, mut second) = (slot(a), slot(b));
        if first > second {
            std::mem::swap(&mut first, &mut second);
        }
        let mut guards = vec![self.slots[first].lock().await];
        if second != first {
            guards.push(self.slots[second].lock().await);
        }
        guards
    }
}
