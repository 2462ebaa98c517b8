//! Uploaded bytes, stored once per content hash so that a document can always be processed
//! again (after a crash, or by a reindex) without the client re-sending it.
//!
//! Paths are derived from the SHA-256 only; client-supplied names never reach the filesystem.

use std::io;
use std::path::{Path, PathBuf};

use crate::util::write_atomic;

/// Content-addressed byte storage.
pub trait BlobStore: Send + Sync {
    /// Stores `bytes` under `sha256` (a no-op when already present).
    fn put(&self, sha256: &str, bytes: &[u8]) -> io::Result<()>;
    /// Whether `sha256` is stored.
    fn contains(&self, sha256: &str) -> bool;
    /// Reads the bytes stored under `sha256`.
    fn get(&self, sha256: &str) -> io::Result<Vec<u8>>;
    /// Removes the bytes (missing is fine).
    fn remove(&self, sha256: &str) -> io::Result<()>;
}

/// Blobs as files `ab/abcdef…` under a folder.
pub struct FsBlobStore {
    root: PathBuf,
}

impl FsBlobStore {
    /// Blobs under `root` (created on first write).
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    fn path(&self, sha256: &str) -> io::Result<PathBuf> {
        let valid = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "blob key is not a SHA-256",
            ));
        }
        Ok(self.root.join(&sha256[..2]).join(sha256))
    }
}

impl BlobStore for FsBlobStore {
    fn put(&self, sha256: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.path(sha256)?;
        if path.is_file() {
            return Ok(());
        }
        if let Some(dir) = path.parent() {
            fs_err::create_dir_all(dir)?;
        }
        write_atomic(&path, bytes)
    }

    fn contains(&self, sha256: &str) -> bool {
        self.path(sha256).is_ok_and(|p| p.is_file())
    }

    fn get(&self, sha256: &str) -> io::Result<Vec<u8>> {
        fs_err::read(self.path(sha256)?)
    }

    fn remove(&self, sha256: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path(sha256)?) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_hostile_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = FsBlobStore::new(dir.path());
        let sha = crate::util::sha256_hex(b"hello");
        blobs.put(&sha, b"hello").expect("put");
        assert!(blobs.contains(&sha));
        assert_eq!(blobs.get(&sha).expect("get"), b"hello");
        blobs.remove(&sha).expect("remove");
        assert!(!blobs.contains(&sha));
        assert!(blobs.put("../../etc/passwd", b"x").is_err());
    }
}
