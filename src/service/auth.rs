//! API keys: creation, verification and what a verified caller may do.
//!
//! A key reads `gw_<key id>_<secret>`; only the SHA-256 of the whole key is stored. The key
//! id is public and only locates the record. Keys are high-entropy (192 random bits), so a
//! single fast hash is the right tool (as for GitHub tokens); a password hash would only add
//! latency to every request.

use rand::RngCore;

use super::{Result, ServiceError};
pub use crate::principal::Principal;
use crate::store::{NewApiKey, Scope, TenantStore};
use crate::util::sha256_hex;

/// Name of the tenant used when the server runs without keys.
pub const DEMO_TENANT: &str = "default";

/// A newly created key; the secret is shown once and never stored.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    /// The whole key, for `Authorization: Bearer`.
    pub secret: String,
    /// Its public id.
    pub key_id: String,
    /// The tenant's name.
    pub tenant: String,
    /// Granted scopes.
    pub scopes: Vec<Scope>,
}

/// Creates a key for `tenant` (created if missing).
pub fn create_key(
    store: &dyn TenantStore,
    tenant: &str,
    name: &str,
    scopes: &[Scope],
) -> Result<CreatedKey> {
    if tenant.trim().is_empty() || scopes.is_empty() {
        return Err(ServiceError::Invalid(
            "a key needs a tenant name and at least one scope".into(),
        ));
    }
    let tenant_row = store.ensure_tenant(tenant)?;
    let mut rng = rand::rng();
    let mut id = [0u8; 6];
    let mut secret = [0u8; 24];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let key_id = hex::encode(id);
    let whole = format!("gw_{key_id}_{}", hex::encode(secret));
    store.insert_key(&NewApiKey {
        key_id: key_id.clone(),
        tenant_id: tenant_row.id,
        name: name.to_owned(),
        secret_hash: sha256_hex(whole.as_bytes()),
        scopes: scopes.to_vec(),
    })?;
    Ok(CreatedKey {
        secret: whole,
        key_id,
        tenant: tenant.to_owned(),
        scopes: scopes.to_vec(),
    })
}

/// Checks a bearer token against the stored keys.
pub fn verify(store: &dyn TenantStore, token: &str) -> Result<Principal> {
    let key_id = token
        .strip_prefix("gw_")
        .and_then(|rest| rest.split_once('_'))
        .map(|(id, _)| id)
        .ok_or(ServiceError::Unauthenticated)?;
    let record = store
        .key_by_id(key_id)?
        .ok_or(ServiceError::Unauthenticated)?;
    let presented = sha256_hex(token.as_bytes());
    if !constant_time_eq(presented.as_bytes(), record.secret_hash.as_bytes()) {
        return Err(ServiceError::Unauthenticated);
    }
    Ok(Principal {
        tenant_id: record.tenant_id,
        key_id: Some(record.key_id),
        scopes: record.scopes,
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    #[test]
    fn keys_verify_and_scopes_nest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("db.sqlite3")).expect("store");
        let key = create_key(&store, "acme", "ci", &[Scope::Write]).expect("key");
        let who = verify(&store, &key.secret).expect("verifies");
        assert!(who.require(Scope::Read).is_ok());
        assert!(who.require(Scope::Write).is_ok());
        assert!(matches!(
            who.require(Scope::Admin),
            Err(crate::principal::Forbidden("admin"))
        ));
        let mut forged = key.secret.clone();
        forged.pop();
        forged.push('x');
        assert!(verify(&store, &forged).is_err());
        assert!(verify(&store, "not-a-key").is_err());
        assert!(store.revoke_key(&key.key_id).expect("revoke"));
        assert!(verify(&store, &key.secret).is_err());
    }
}
