//! Who is calling: the verified caller every service and agent call is checked against.
//!
//! Owns the caller's identity (tenant, key, scopes) and the scope check. It is a leaf: it
//! imports only the scope vocabulary of the store and must never look anything up — the API's
//! key check (`service::auth`) and the local CLI make principals; everything else reads them.

use crate::store::Scope;

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The tenant everything is scoped to.
    pub tenant_id: String,
    /// The key used (`None` in demo mode).
    pub key_id: Option<String>,
    /// What the caller may do.
    pub scopes: Vec<Scope>,
}

/// The caller lacks the scope named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this API key lacks the `{0}` scope")]
pub struct Forbidden(pub &'static str);

impl Principal {
    /// Fails unless the caller holds `scope` (admin implies write, write implies infer,
    /// infer implies read).
    pub fn require(&self, scope: Scope) -> Result<(), Forbidden> {
        if self.scopes.iter().any(|s| *s >= scope) {
            Ok(())
        } else {
            Err(Forbidden(scope.as_str()))
        }
    }
}

impl crate::error::Classify for Forbidden {
    fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::Forbidden
    }
    fn code(&self) -> &'static str {
        "forbidden"
    }
}
