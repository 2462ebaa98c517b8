//! The HTTP shapes of stored things: what a client reads (and, for settings and filters,
//! sends), described in the OpenAPI document. The store's records convert into these at the
//! edge, so a storage change never changes the API by accident (and internal fields such as a
//! record's tenant never leave the process).
//!
//! Owns only shapes and conversions; must never hold behaviour.

mod agents;
mod documents;
mod gateway;
mod kbs;
mod workflows;

pub use agents::*;
pub use documents::*;
pub use gateway::*;
pub use kbs::*;
pub use workflows::*;

/// Converts every item of a list.
pub fn all<T, U: From<T>>(items: Vec<T>) -> Vec<U> {
    items.into_iter().map(U::from).collect()
}
