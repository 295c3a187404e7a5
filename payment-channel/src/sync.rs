//! Locking of the short `std::sync::Mutex`es the async drivers and test chains hold (never across
//! an `.await`).

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, recovering from poisoning: a panic while holding one of these short locks leaves
/// plain data behind, so keep going.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
