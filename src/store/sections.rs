//! Exclusive sections: "check, then write" sequences that must not interleave with one
//! another in any process sharing the store (admitting uploads against the queue capacity;
//! registering bytes against dropping bytes nobody references).
//!
//! It owns only the mutual exclusion; what a section protects is its caller's business. It
//! must never be held across a model call or a wait on anything but the store.

use std::sync::{Mutex, MutexGuard};

use super::Result;

/// A section guarded across processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Count unfinished documents, then register new ones (the queue capacity).
    Admission,
    /// Make sure an upload's bytes exist and register its document, against deleting
    /// documents and then the bytes nobody references any more.
    Blobs,
}

impl Section {
    /// A stable number for the section (the PostgreSQL advisory lock's key).
    pub(crate) fn number(self) -> i32 {
        match self {
            Section::Admission => 1,
            Section::Blobs => 2,
        }
    }
}

/// Proof of holding a section; leaving it happens on drop.
pub struct Held<'a> {
    _guard: Box<dyn Guard + 'a>,
}

impl<'a> Held<'a> {
    pub(crate) fn new(guard: impl Guard + 'a) -> Self {
        Self {
            _guard: Box::new(guard),
        }
    }
}

/// Anything whose drop leaves a section.
pub(crate) trait Guard {}
impl<T> Guard for T {}

/// Exclusive sections over the store.
pub trait SectionStore: Send + Sync {
    /// Enters `section`, waiting for whoever holds it (in this process or another sharing
    /// the store); [`super::StoreError::Busy`] when that takes longer than the store allows.
    fn enter(&self, section: Section) -> Result<Held<'_>>;
}

/// One mutex per section: enough where one process owns the store, and the first stage
/// everywhere (a process's callers queue here, not on database connections).
#[derive(Default)]
pub(crate) struct Local<T> {
    admission: Mutex<T>,
    blobs: Mutex<T>,
}

impl<T> Local<T> {
    pub(crate) fn lock(&self, section: Section) -> MutexGuard<'_, T> {
        let m = match section {
            Section::Admission => &self.admission,
            Section::Blobs => &self.blobs,
        };
        // Nothing a section guards is left half-done in memory by a panic.
        m.lock().unwrap_or_else(|p| p.into_inner())
    }
}
