//! Upload bytes in the database, in parts of at most [`PART`] bytes, so that a process needs
//! nothing but the store's URL to process any document again.

use std::io;

use super::PgStore;
use crate::store::{BlobStore, StoreError};

/// Bytes per stored part (rows stay well under PostgreSQL's 1 GB field limit and are written
/// without building one huge parameter).
const PART: usize = 1 << 20;

/// [`BlobStore`] over the `blobs` table of a [`PgStore`].
pub struct PgBlobStore {
    store: std::sync::Arc<PgStore>,
}

impl PgBlobStore {
    /// Blobs kept by `store`.
    pub fn new(store: std::sync::Arc<PgStore>) -> Self {
        Self { store }
    }
}

fn io_err(e: StoreError) -> io::Error {
    io::Error::other(e.to_string())
}

fn valid(sha256: &str) -> io::Result<()> {
    if sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "blob key is not a SHA-256",
        ))
    }
}

impl BlobStore for PgBlobStore {
    fn put(&self, sha256: &str, bytes: &[u8]) -> io::Result<()> {
        valid(sha256)?;
        self.store
            .write(|tx| {
                // All parts in one transaction: part 0 present means the whole blob is.
                let present = tx.query_opt(
                    "SELECT 1 FROM blobs WHERE sha256 = $1 AND part = 0",
                    &[&sha256],
                )?;
                if present.is_some() {
                    return Ok(());
                }
                let parts: Vec<&[u8]> = if bytes.is_empty() {
                    vec![&[][..]]
                } else {
                    bytes.chunks(PART).collect()
                };
                for (i, part) in parts.into_iter().enumerate() {
                    tx.execute(
                        "INSERT INTO blobs (sha256, part, bytes) VALUES ($1, $2, $3)
                         ON CONFLICT DO NOTHING",
                        &[&sha256, &(i as i64), &part],
                    )?;
                }
                Ok(())
            })
            .map_err(io_err)
    }

    fn contains(&self, sha256: &str) -> bool {
        valid(sha256).is_ok()
            && self
                .store
                .read(|c| {
                    Ok(c.query_opt(
                        "SELECT 1 FROM blobs WHERE sha256 = $1 AND part = 0",
                        &[&sha256],
                    )?
                    .is_some())
                })
                .unwrap_or(false)
    }

    fn get(&self, sha256: &str) -> io::Result<Vec<u8>> {
        valid(sha256)?;
        let parts = self
            .store
            .read(|c| {
                Ok(c.query(
                    "SELECT bytes FROM blobs WHERE sha256 = $1 ORDER BY part",
                    &[&sha256],
                )?)
            })
            .map_err(io_err)?;
        if parts.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("blob {sha256} is not stored"),
            ));
        }
        let mut out = Vec::new();
        for r in &parts {
            out.extend_from_slice(r.get::<_, &[u8]>(0));
        }
        Ok(out)
    }

    fn remove(&self, sha256: &str) -> io::Result<()> {
        valid(sha256)?;
        self.store
            .write(|tx| {
                tx.execute("DELETE FROM blobs WHERE sha256 = $1", &[&sha256])?;
                Ok(())
            })
            .map_err(io_err)
    }
}
