//! The catalog: the in-memory search index of every knowledge base, kept in step with the
//! store, saved to disk and rebuilt from the stored vectors.
//!
//! Each index records the store's `index_seq` it reflects. A writer takes the KB's
//! [`WriteOrder`] around "store commit + index apply", so changes land in the store's order;
//! [`KbIndex::apply`] and [`KbIndex::swap_in`] ask for that guard, so the order cannot be
//! skipped. Indexes are saved in the background; at start-up a saved index is used only when
//! its sequence equals the store's, otherwise it is rebuilt from the stored vectors (never
//! re-embedded).
//!
//! Another process's changes arrive through the store's change log ([`KbIndex::follow`]),
//! applied under the same write order, so an index reflects a prefix of the store's changes.
//!
//! Owns the per-KB locks: callers get guards, never the lock fields. Must never commit to the
//! store: it only reads stored vectors and the change log.

use std::collections::HashMap;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use super::Result;
use super::{io_err, Collection, CollectionOptions, IndexError, IndexStamp, NewPoint, PointMeta};
use crate::store::{ChangeKind, DocumentStore, IndexChange, Kb, Store, StoreError, StoredPoint};
use crate::util::write_atomic;

const SEQ_FILE: &str = "SEQ";

/// How far [`KbIndex::follow`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Followed {
    /// The index reflects what was asked for (everything committed, or `until`).
    Reached,
    /// Everything committed is applied, but the number asked for is not committed yet.
    NotYet,
    /// The log cannot bring the index there: rebuild it from the stored vectors.
    Rebuild,
}

/// One knowledge base's index.
pub struct KbIndex {
    dir: PathBuf,
    /// The searchable collection (many readers, one writer).
    collection: RwLock<Collection>,
    /// Held across "store commit + index apply" so changes apply in commit order.
    order: Mutex<()>,
    applied_seq: AtomicU64,
    saved_seq: AtomicU64,
}

/// Proof that the holder is the KB's only writer: taken before a store commit whose change the
/// index must then apply, released after.
pub struct WriteOrder<'a> {
    _guard: MutexGuard<'a, ()>,
    of: &'a KbIndex,
}

/// A read view of a KB's collection; a reindex cannot switch it while this is held.
pub struct Reader<'a>(RwLockReadGuard<'a, Collection>);

impl Deref for Reader<'_> {
    type Target = Collection;
    fn deref(&self) -> &Collection {
        &self.0
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl KbIndex {
    /// Becomes the KB's only writer until the guard drops.
    pub fn write_order(&self) -> WriteOrder<'_> {
        WriteOrder {
            _guard: self.order.lock().unwrap_or_else(|p| p.into_inner()),
            of: self,
        }
    }

    /// Reads the collection (searches hold this until they have read their chunks).
    pub fn reader(&self) -> Reader<'_> {
        Reader(read(&self.collection))
    }

    fn check(&self, order: &WriteOrder<'_>) {
        assert!(
            std::ptr::eq(order.of, self),
            "a write order of another knowledge base's index"
        );
    }

    /// Applies a committed change: removes `removed`, adds `added`, records `seq`.
    pub fn apply(
        &self,
        order: &WriteOrder<'_>,
        model_id: &str,
        removed: &[u64],
        added: Vec<NewPoint<'_>>,
        seq: u64,
    ) -> Result<()> {
        self.check(order);
        let mut c = write(&self.collection);
        if !removed.is_empty() {
            c.delete_chunks(removed);
        }
        if !added.is_empty() {
            c.upsert(model_id, added)?;
        }
        self.applied_seq.fetch_max(seq, Ordering::SeqCst);
        Ok(())
    }

    /// Replaces the whole collection (a reindex switching generation): `commit` (the store's
    /// switch) runs while the collection is write-locked, so no search sees the new store
    /// with the old index or the reverse.
    pub fn swap_in<E>(
        &self,
        order: &WriteOrder<'_>,
        collection: Collection,
        commit: impl FnOnce() -> std::result::Result<Option<u64>, E>,
    ) -> std::result::Result<Option<u64>, E> {
        self.check(order);
        let mut c = write(&self.collection);
        let seq = commit()?;
        if let Some(seq) = seq {
            *c = collection;
            self.applied_seq.store(seq, Ordering::SeqCst);
            self.saved_seq.store(u64::MAX, Ordering::SeqCst);
        }
        Ok(seq)
    }

    /// The store's sequence number the index reflects.
    pub fn applied_seq(&self) -> u64 {
        self.applied_seq.load(Ordering::SeqCst)
    }

    /// Applies the store's logged changes after the applied sequence, up to `until` (every
    /// one logged when `None`): how a replica takes in what other processes committed, and how
    /// a writer closes the gap before applying its own change. Each publish's points are read
    /// back from the store. [`Followed::Rebuild`] when the log cannot bring the index there
    /// (entries forgotten, a generation switch, vectors of another model): the caller
    /// rebuilds it.
    pub fn follow(
        &self,
        order: &WriteOrder<'_>,
        kb_id: &str,
        store: &dyn Store,
        until: Option<u64>,
    ) -> Result<Followed> {
        self.check(order);
        loop {
            let applied = self.applied_seq();
            if until.is_some_and(|u| applied >= u) {
                return Ok(Followed::Reached);
            }
            let Some(changes) = store
                .index_changes(kb_id, applied, 256)
                .map_err(IndexError::Store)?
            else {
                return Ok(Followed::Rebuild);
            };
            if changes.is_empty() {
                // Nothing logged after `applied`: either nothing was committed since (a number
                // asked for is not there yet), or the log lost its entries.
                let committed = store.kb_by_id(kb_id).map_err(IndexError::Store)?.index_seq;
                return Ok(if committed > applied {
                    Followed::Rebuild
                } else if until.is_some_and(|u| applied < u) {
                    Followed::NotYet
                } else {
                    Followed::Reached
                });
            }
            for change in changes {
                if until.is_some_and(|u| change.seq > u) {
                    return Ok(Followed::Reached);
                }
                if !self.apply_logged(order, kb_id, store, &change)? {
                    return Ok(Followed::Rebuild);
                }
            }
        }
    }

    fn apply_logged(
        &self,
        order: &WriteOrder<'_>,
        kb_id: &str,
        store: &dyn Store,
        change: &IndexChange,
    ) -> Result<bool> {
        let mut points = Vec::new();
        match change.kind {
            ChangeKind::Switch => return Ok(false),
            ChangeKind::Delete => {}
            ChangeKind::Publish => {
                if let Some(doc) = &change.document_id {
                    points = store.document_points(doc).map_err(IndexError::Store)?;
                }
            }
        }
        let model_id = read(&self.collection).stamp().model_id.clone();
        let added = new_points(kb_id, &mut points);
        match self.apply(order, &model_id, &change.removed, added, change.seq) {
            Ok(()) => {}
            // Points of a generation this index does not hold: a switch happened since.
            Err(IndexError::Dimension { .. }) | Err(IndexError::ModelMismatch { .. }) => {
                return Ok(false)
            }
            Err(e) => return Err(e),
        }
        metrics::histogram!("groundwork_index_follow_lag_seconds").record(
            (chrono::Utc::now() - change.at)
                .to_std()
                .unwrap_or_default()
                .as_secs_f64(),
        );
        Ok(true)
    }

    /// Installs a collection rebuilt from the store as of `seq`, unless the index already
    /// reflects a later change (then the rebuild is stale: `false`).
    pub fn replace(&self, order: &WriteOrder<'_>, collection: Collection, seq: u64) -> bool {
        self.check(order);
        let mut c = write(&self.collection);
        if self.applied_seq() > seq {
            return false;
        }
        *c = collection;
        self.applied_seq.store(seq, Ordering::SeqCst);
        self.saved_seq.store(u64::MAX, Ordering::SeqCst);
        true
    }

    /// Live chunks.
    pub fn len(&self) -> usize {
        read(&self.collection).len()
    }

    /// Whether the index holds no chunk.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Saves when changed since the last save.
    pub fn save_if_dirty(&self) -> Result<bool> {
        let c = read(&self.collection);
        let seq = self.applied_seq.load(Ordering::SeqCst);
        if seq == self.saved_seq.load(Ordering::SeqCst) {
            return Ok(false);
        }
        c.save(&self.dir)?;
        // Written after the generation: a crash in between leaves a stale SEQ, which only
        // forces a rebuild at the next start.
        let seq_file = self.dir.join(SEQ_FILE);
        write_atomic(&seq_file, seq.to_string().as_bytes()).map_err(io_err(&seq_file))?;
        self.saved_seq.store(seq, Ordering::SeqCst);
        Ok(true)
    }
}

/// Every knowledge base's index.
pub struct Catalog {
    root: PathBuf,
    options: CollectionOptions,
    map: RwLock<HashMap<String, Arc<KbIndex>>>,
}

impl Catalog {
    /// Indexes kept under `root/<kb id>/`.
    pub fn new(root: &Path, options: CollectionOptions) -> Self {
        Self {
            root: root.to_owned(),
            options,
            map: RwLock::new(HashMap::new()),
        }
    }

    /// The index of a knowledge base.
    pub fn get(&self, kb_id: &str) -> Result<Arc<KbIndex>> {
        read(&self.map)
            .get(kb_id)
            .cloned()
            .ok_or(IndexError::NotLoaded)
    }

    /// Opens the index of `kb`: the saved one when it matches the store, else rebuilt from the
    /// stored vectors. Returns whether it was rebuilt.
    pub fn open(&self, kb: &Kb, store: &dyn DocumentStore) -> Result<bool> {
        let dir = self.root.join(&kb.id);
        let stamp = IndexStamp {
            model_id: kb.embedding_model.clone(),
            dimension: kb.dimension as usize,
        };
        let saved_seq = std::fs::read_to_string(dir.join(SEQ_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        let loaded = if saved_seq == Some(kb.index_seq) && Collection::exists(&dir) {
            match Collection::load(&dir, Some(&stamp)) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(kb = %kb.name, error = %e, "saved index unreadable; rebuilding");
                    None
                }
            }
        } else {
            None
        };
        let rebuilt = loaded.is_none();
        let (collection, seq) = match loaded {
            Some(c) => (c, kb.index_seq),
            None => rebuild(&kb.id, &kb.name, &stamp, self.options, None, store)?,
        };
        let index = Arc::new(KbIndex {
            dir,
            collection: RwLock::new(collection),
            order: Mutex::new(()),
            applied_seq: AtomicU64::new(seq),
            saved_seq: AtomicU64::new(if rebuilt { u64::MAX } else { seq }),
        });
        write(&self.map).insert(kb.id.clone(), index);
        Ok(rebuilt)
    }

    /// Builds a collection from a KB's stored vectors of `generation` (the serving one when
    /// `None`), for a reindex to install.
    pub fn build(
        &self,
        kb_id: &str,
        kb_name: &str,
        stamp: &IndexStamp,
        generation: Option<u64>,
        store: &dyn DocumentStore,
    ) -> Result<Collection> {
        Ok(rebuild(kb_id, kb_name, stamp, self.options, generation, store)?.0)
    }

    /// Builds a collection from a KB's serving generation as the store holds it now; returns
    /// it with the sequence number it reflects (see [`KbIndex::replace`]).
    pub fn build_serving(&self, kb: &Kb, store: &dyn DocumentStore) -> Result<(Collection, u64)> {
        let stamp = IndexStamp {
            model_id: kb.embedding_model.clone(),
            dimension: kb.dimension as usize,
        };
        rebuild(&kb.id, &kb.name, &stamp, self.options, None, store)
    }

    /// Brings `index` (of `kb_id`, whose write order the caller holds) up to `until`, or to
    /// everything committed: the logged changes, else a rebuild from the store's serving
    /// generation. Returns whether it rebuilt.
    pub fn bring_up(
        &self,
        kb_id: &str,
        index: &KbIndex,
        order: &WriteOrder<'_>,
        store: &dyn Store,
        until: Option<u64>,
    ) -> Result<bool> {
        if index.follow(order, kb_id, store, until)? != Followed::Rebuild {
            return Ok(false);
        }
        let kb = store.kb_by_id(kb_id).map_err(IndexError::Store)?;
        let started = std::time::Instant::now();
        let (collection, seq) = self.build_serving(&kb, store)?;
        if index.replace(order, collection, seq) {
            tracing::info!(kb = %kb.name, seq, ms = started.elapsed().as_millis() as u64, "index rebuilt to follow the store");
        }
        Ok(true)
    }

    /// Whether a knowledge base's index is loaded.
    pub fn contains(&self, kb_id: &str) -> bool {
        read(&self.map).contains_key(kb_id)
    }

    /// The knowledge bases whose indexes are loaded.
    pub fn kb_ids(&self) -> Vec<String> {
        read(&self.map).keys().cloned().collect()
    }

    /// Forgets a knowledge base's index and removes its files.
    pub fn remove(&self, kb_id: &str) {
        write(&self.map).remove(kb_id);
        let dir = self.root.join(kb_id);
        if dir.exists() {
            if let Err(e) = fs_err::remove_dir_all(&dir) {
                tracing::warn!(error = %e, "could not remove index files");
            }
        }
    }

    /// Saves every index changed since its last save; returns how many were saved.
    pub fn save_dirty(&self) -> usize {
        let all: Vec<(String, Arc<KbIndex>)> = read(&self.map)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut saved = 0;
        for (kb, index) in all {
            match index.save_if_dirty() {
                Ok(true) => saved += 1,
                Ok(false) => {}
                Err(e) => tracing::error!(kb = %kb, error = %e, "saving index failed"),
            }
        }
        saved
    }

    /// Live chunks over every index.
    pub fn total_chunks(&self) -> usize {
        read(&self.map).values().map(|i| i.len()).sum()
    }
}

/// Stored points as the collection takes them (vectors and metadata moved out, texts lent).
fn new_points<'a>(kb_id: &str, points: &'a mut [StoredPoint]) -> Vec<NewPoint<'a>> {
    points
        .iter_mut()
        .map(|p| NewPoint {
            meta: PointMeta {
                chunk_id: p.chunk_id,
                document_id: p.document_id.clone(),
                kb: kb_id.to_owned(),
                metadata: std::mem::take(&mut p.metadata),
            },
            vector: std::mem::take(&mut p.vector),
            text: &p.text,
        })
        .collect()
}

fn rebuild(
    kb_id: &str,
    kb_name: &str,
    stamp: &IndexStamp,
    options: CollectionOptions,
    generation: Option<u64>,
    store: &dyn DocumentStore,
) -> Result<(Collection, u64)> {
    let started = std::time::Instant::now();
    let mut collection = Collection::new(stamp.clone(), options);
    let mut batch: Vec<StoredPoint> = Vec::with_capacity(4096);
    let flush = |batch: &mut Vec<StoredPoint>, collection: &mut Collection| -> Result<()> {
        let points = new_points(kb_id, batch);
        collection.upsert(&stamp.model_id, points)?;
        batch.clear();
        Ok(())
    };
    let mut failed = None;
    let seq = store.for_each_vector(kb_id, generation, &mut |p| {
        batch.push(p);
        if batch.len() == batch.capacity() {
            if let Err(e) = flush(&mut batch, &mut collection) {
                failed = Some(e);
                return Err(StoreError::Database("index rebuild failed".into()));
            }
        }
        Ok(())
    });
    if let Some(e) = failed {
        return Err(e);
    }
    let seq = seq.map_err(IndexError::Store)?;
    flush(&mut batch, &mut collection)?;
    tracing::info!(
        kb = %kb_name,
        chunks = collection.len(),
        ms = started.elapsed().as_millis() as u64,
        "index rebuilt from stored vectors"
    );
    Ok((collection, seq))
}
