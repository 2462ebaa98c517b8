//! The embedded store: one SQLite file in WAL mode, one writer connection and a small pool of
//! reader connections.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chrono::Utc;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};

use super::codec::{json_err, new_id, vector_bytes, CHUNK_SELECT, DOC_COLS, KB_COLS, KEY_SELECT};
use super::migrations::migrations;
use super::sections::Local;
use super::types::*;
use super::{
    ChangeKind, DocumentStore, GenerationStore, HealthStore, Held, JobStore, KbStore, Result,
    Section, SectionStore, StoreError, TenantStore,
};

mod agents;
mod changes;
mod gateway;
mod replicas;
mod sources;
mod workflows;

/// Reader connections kept open for reuse (more are opened under bursts, then closed).
const READERS: usize = 16;

/// SQLite-backed [`super::Store`].
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// One process owns a SQLite store (the service locks its data directory), so its
    /// sections are plain mutexes.
    sections: Local<()>,
}

fn open(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // FULL: an acknowledged write survives power loss, not only a process crash.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;",
    )?;
    Ok(conn)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a connection cannot leave SQLite inconsistent (transactions roll
    // back on drop), so a poisoned lock is safe to reuse.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it to the latest schema.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Database(format!("{}: {e}", dir.display())))?;
        }
        let mut writer = open(path)?;
        migrations()
            .to_latest(&mut writer)
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        Ok(Self {
            path: path.to_owned(),
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            sections: Local::default(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A reader connection for a whole-store pass (the copy into PostgreSQL).
    pub(in crate::store) fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T>,
    ) -> Result<T> {
        self.read(f)
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = lock(&self.readers).pop();
        let conn = match conn {
            Some(c) => c,
            None => open(&self.path)?,
        };
        let out = f(&conn);
        let mut pool = lock(&self.readers);
        if pool.len() < READERS {
            pool.push(conn);
        }
        out
    }

    fn write<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        self.write_with(true, f)
    }

    /// A write of the workflow engine's own bookkeeping (see [`crate::store::WorkflowStore`]):
    /// committed without waiting for the disk. It survives a process crash like any commit
    /// (the WAL is in the OS's cache); a power loss may drop it, but only with every later
    /// commit (the WAL is replayed as a prefix), and the next durable commit makes it durable.
    fn write_checkpoint<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        self.write_with(false, f)
    }

    fn write_with<T>(
        &self,
        durable: bool,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut conn = lock(&self.writer);
        if !durable {
            conn.execute_batch("PRAGMA synchronous = NORMAL")?;
        }
        let out = (|| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })();
        if !durable {
            // Restored whatever the write's outcome: the next writer expects FULL.
            conn.execute_batch("PRAGMA synchronous = FULL")?;
        }
        out
    }
}

fn kb_row(r: &Row<'_>) -> rusqlite::Result<Kb> {
    Ok(Kb {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        name: r.get(2)?,
        description: r.get(3)?,
        embedding_model: r.get(4)?,
        dimension: r.get(5)?,
        chunking: ChunkingStamp {
            max_tokens: r.get(6)?,
            overlap_tokens: r.get(7)?,
        },
        index_seq: r.get::<_, i64>(8)? as u64,
        created_at: r.get(9)?,
        generation: r.get::<_, i64>(10)? as u64,
        model_source: r.get(11)?,
        rerank: KbRerank::from_columns(r.get(12)?, r.get(13)?),
    })
}

/// A ready document (alias `d`) whose chunks were not made with its KB's (alias `k`) settings.
const STALE: &str = "d.status = 'ready' AND (d.embedding_model IS NOT k.embedding_model \
    OR d.chunk_max_tokens IS NOT k.chunk_max_tokens \
    OR d.chunk_overlap_tokens IS NOT k.chunk_overlap_tokens)";

struct RawDoc {
    doc: Document,
    metadata: String,
    warnings: String,
    status: String,
    extraction: Option<String>,
}

fn doc_row(r: &Row<'_>) -> rusqlite::Result<RawDoc> {
    Ok(RawDoc {
        doc: Document {
            id: r.get(0)?,
            kb_id: r.get(1)?,
            job_id: r.get(2)?,
            name: r.get(3)?,
            media_type: r.get(4)?,
            size: r.get::<_, i64>(5)? as u64,
            sha256: r.get(6)?,
            status: DocumentStatus::Queued,
            error_code: r.get(8)?,
            error: r.get(9)?,
            metadata: Default::default(),
            chunk_count: r.get::<_, i64>(11)? as u64,
            pages: r.get(12)?,
            warnings: Vec::new(),
            replaces: r.get(14)?,
            created_at: r.get(15)?,
            updated_at: r.get(16)?,
            embedding_model: r.get(17)?,
            chunking: match (r.get::<_, Option<u32>>(18)?, r.get::<_, Option<u32>>(19)?) {
                (Some(max_tokens), Some(overlap_tokens)) => Some(ChunkingStamp {
                    max_tokens,
                    overlap_tokens,
                }),
                _ => None,
            },
            extraction: None,
            password: r.get(21)?,
        },
        status: r.get(7)?,
        metadata: r.get(10)?,
        warnings: r.get(13)?,
        extraction: r.get(20)?,
    })
}

impl RawDoc {
    fn finish(self) -> Result<Document> {
        let mut doc = self.doc;
        doc.status = DocumentStatus::parse(&self.status)
            .ok_or_else(|| StoreError::Database(format!("unknown status {}", self.status)))?;
        doc.metadata = serde_json::from_str(&self.metadata).map_err(json_err)?;
        doc.warnings = serde_json::from_str(&self.warnings).map_err(json_err)?;
        doc.extraction = match self.extraction {
            Some(json) => Some(serde_json::from_str(&json).map_err(json_err)?),
            None => None,
        };
        Ok(doc)
    }
}

fn get_doc(conn: &Connection, kb_id: &str, id: &str) -> Result<Document> {
    conn.query_row(
        &format!("SELECT {DOC_COLS} FROM documents WHERE id = ?1 AND kb_id = ?2"),
        params![id, kb_id],
        doc_row,
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound {
        kind: "document",
        id: id.to_owned(),
    })?
    .finish()
}

/// Ids of a document's chunks in the serving generation (those an index holds).
fn chunk_ids_of(conn: &Connection, document_id: &str) -> Result<Vec<u64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id
         JOIN kbs k ON k.id = d.kb_id
         WHERE c.document_id = ?1 AND c.generation = k.generation ORDER BY c.id",
    )?;
    let ids = stmt
        .query_map([document_id], |r| r.get::<_, i64>(0))?
        .map(|r| r.map(|v| v as u64))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(ids)
}

/// Inserts chunks of one generation; returns their ids in order.
fn insert_chunks(
    tx: &Connection,
    document_id: &str,
    generation: i64,
    chunks: &[ChunkRow<'_>],
) -> Result<Vec<u64>> {
    let mut ids = Vec::with_capacity(chunks.len());
    let mut stmt = tx.prepare_cached(
        "INSERT INTO chunks (document_id, ordinal, start_offset, end_offset, text, tokens,
                             page_start, page_end, heading_path, hash, vector, generation,
                             context, ocr_confidence)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?;
    for c in chunks {
        let headings = serde_json::to_string(c.heading_path).map_err(json_err)?;
        stmt.execute(params![
            document_id,
            c.ordinal,
            c.start as i64,
            c.end as i64,
            c.text,
            c.tokens,
            c.pages.map(|p| p.0),
            c.pages.map(|p| p.1),
            headings,
            c.hash,
            vector_bytes(c.vector),
            generation,
            c.context,
            c.ocr_confidence
        ])?;
        ids.push(tx.last_insert_rowid() as u64);
    }
    Ok(ids)
}

/// Removes a document row (chunks cascade); returns its content hash if now unreferenced.
fn remove_document(conn: &Connection, id: &str) -> Result<Option<String>> {
    let sha: Option<String> = conn
        .query_row("SELECT sha256 FROM documents WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?;
    conn.execute("DELETE FROM documents WHERE id = ?1", [id])?;
    Ok(match sha {
        Some(sha) => {
            let still: bool = conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM documents WHERE sha256 = ?1)",
                [&sha],
                |r| r.get(0),
            )?;
            (!still).then_some(sha)
        }
        None => None,
    })
}

/// Advances a knowledge base's index sequence and logs what changed at the new number.
fn bump_seq(
    conn: &Connection,
    kb_id: &str,
    kind: ChangeKind,
    document_id: Option<&str>,
    removed: &[u64],
) -> Result<u64> {
    let seq: i64 = conn.query_row(
        "UPDATE kbs SET index_seq = index_seq + 1 WHERE id = ?1 RETURNING index_seq",
        [kb_id],
        |r| r.get(0),
    )?;
    let removed = serde_json::to_string(removed).map_err(json_err)?;
    conn.prepare_cached(
        "INSERT INTO index_changes (kb_id, seq, kind, document_id, removed, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        kb_id,
        seq,
        kind.as_str(),
        document_id,
        removed,
        Utc::now()
    ])?;
    Ok(seq as u64)
}

fn key_row(r: &Row<'_>) -> rusqlite::Result<(ApiKeyRecord, String)> {
    Ok((
        ApiKeyRecord {
            key_id: r.get(0)?,
            tenant_id: r.get(1)?,
            tenant_name: r.get(2)?,
            name: r.get(3)?,
            secret_hash: r.get(4)?,
            scopes: Vec::new(),
            created_at: r.get(6)?,
            revoked_at: r.get(7)?,
        },
        r.get(5)?,
    ))
}

fn parse_scopes((mut key, scopes): (ApiKeyRecord, String)) -> ApiKeyRecord {
    key.scopes = scopes.split(',').filter_map(Scope::parse).collect();
    key
}

impl HealthStore for SqliteStore {
    fn ping(&self) -> Result<()> {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
    }

    fn pool_use(&self) -> Option<PoolUse> {
        None
    }
}

impl SectionStore for SqliteStore {
    fn enter(&self, section: Section) -> Result<Held<'_>> {
        Ok(Held::new(self.sections.lock(section)))
    }
}

impl TenantStore for SqliteStore {
    fn ensure_tenant(&self, name: &str) -> Result<Tenant> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO tenants (id, name, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO NOTHING",
                params![new_id(), name, Utc::now()],
            )?;
            Ok(tx.query_row(
                "SELECT id, name, created_at FROM tenants WHERE name = ?1",
                [name],
                |r| {
                    Ok(Tenant {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        created_at: r.get(2)?,
                    })
                },
            )?)
        })
    }

    fn insert_key(&self, key: &NewApiKey) -> Result<ApiKeyRecord> {
        let scopes = key
            .scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(",");
        self.write(|tx| {
            tx.execute(
                "INSERT INTO api_keys (key_id, tenant_id, name, secret_hash, scopes, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    key.key_id,
                    key.tenant_id,
                    key.name,
                    key.secret_hash,
                    scopes,
                    Utc::now()
                ],
            )?;
            Ok(())
        })?;
        self.key_by_id(&key.key_id)?
            .ok_or_else(|| StoreError::NotFound {
                kind: "API key",
                id: key.key_id.clone(),
            })
    }

    fn key_by_id(&self, key_id: &str) -> Result<Option<ApiKeyRecord>> {
        self.read(|c| {
            Ok(c.query_row(
                &format!("{KEY_SELECT} WHERE k.key_id = ?1 AND k.revoked_at IS NULL"),
                [key_id],
                key_row,
            )
            .optional()?
            .map(parse_scopes))
        })
    }

    fn has_keys(&self) -> Result<bool> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL)",
                [],
                |r| r.get(0),
            )?)
        })
    }

    fn list_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!("{KEY_SELECT} ORDER BY k.created_at"))?;
            let rows = stmt
                .query_map([], key_row)?
                .map(|r| r.map(parse_scopes))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    fn revoke_key(&self, key_id: &str) -> Result<bool> {
        self.write(|tx| {
            Ok(tx.execute(
                "UPDATE api_keys SET revoked_at = ?2 WHERE key_id = ?1 AND revoked_at IS NULL",
                params![key_id, Utc::now()],
            )? > 0)
        })
    }
}

impl KbStore for SqliteStore {
    fn create_kb(&self, kb: &NewKb) -> Result<Kb> {
        let id = new_id();
        self.write(|tx| {
            let taken: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM kbs WHERE tenant_id = ?1 AND name = ?2)",
                params![kb.tenant_id, kb.name],
                |r| r.get(0),
            )?;
            if taken {
                return Err(StoreError::Conflict {
                    kind: "knowledge base",
                    name: kb.name.clone(),
                });
            }
            tx.execute(
                "INSERT INTO kbs (id, tenant_id, name, description, embedding_model, dimension,
                                  chunk_max_tokens, chunk_overlap_tokens, created_at, model_source,
                                  rerank_model, rerank_candidates)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    id,
                    kb.tenant_id,
                    kb.name,
                    kb.description,
                    kb.embedding_model,
                    kb.dimension,
                    kb.chunking.max_tokens,
                    kb.chunking.overlap_tokens,
                    Utc::now(),
                    kb.model_source,
                    kb.rerank.as_ref().map(|r| r.model.clone()),
                    kb.rerank.as_ref().and_then(|r| r.candidates)
                ],
            )?;
            Ok(tx.query_row(
                &format!("SELECT {KB_COLS} FROM kbs WHERE id = ?1"),
                [&id],
                kb_row,
            )?)
        })
    }

    fn list_kbs(&self, tenant_id: &str) -> Result<Vec<Kb>> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {KB_COLS} FROM kbs WHERE tenant_id = ?1 ORDER BY name"
            ))?;
            let rows = stmt
                .query_map([tenant_id], kb_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    fn all_kbs(&self) -> Result<Vec<Kb>> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!("SELECT {KB_COLS} FROM kbs ORDER BY created_at"))?;
            let rows = stmt
                .query_map([], kb_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    fn get_kb(&self, tenant_id: &str, id_or_name: &str) -> Result<Kb> {
        self.read(|c| {
            c.query_row(
                &format!(
                    "SELECT {KB_COLS} FROM kbs WHERE tenant_id = ?1 AND (id = ?2 OR name = ?2)
                     ORDER BY id = ?2 DESC LIMIT 1"
                ),
                params![tenant_id, id_or_name],
                kb_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound {
                kind: "knowledge base",
                id: id_or_name.to_owned(),
            })
        })
    }

    fn kb_by_id(&self, id: &str) -> Result<Kb> {
        self.read(|c| {
            c.query_row(
                &format!("SELECT {KB_COLS} FROM kbs WHERE id = ?1"),
                [id],
                kb_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound {
                kind: "knowledge base",
                id: id.to_owned(),
            })
        })
    }

    fn set_kb_rerank(&self, kb_id: &str, rerank: Option<&KbRerank>) -> Result<Kb> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE kbs SET rerank_model = ?2, rerank_candidates = ?3 WHERE id = ?1",
                params![
                    kb_id,
                    rerank.map(|r| r.model.clone()),
                    rerank.and_then(|r| r.candidates)
                ],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound {
                    kind: "knowledge base",
                    id: kb_id.to_owned(),
                });
            }
            Ok(tx.query_row(
                &format!("SELECT {KB_COLS} FROM kbs WHERE id = ?1"),
                [kb_id],
                kb_row,
            )?)
        })
    }

    fn delete_kb(&self, kb_id: &str) -> Result<Vec<String>> {
        self.write(|tx| {
            let mut stmt = tx.prepare("SELECT DISTINCT sha256 FROM documents WHERE kb_id = ?1")?;
            let shas = stmt
                .query_map([kb_id], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            drop(stmt);
            if tx.execute("DELETE FROM kbs WHERE id = ?1", [kb_id])? == 0 {
                return Err(StoreError::NotFound {
                    kind: "knowledge base",
                    id: kb_id.to_owned(),
                });
            }
            let mut orphaned = Vec::new();
            for sha in shas {
                let still: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM documents WHERE sha256 = ?1)",
                    [&sha],
                    |r| r.get(0),
                )?;
                if !still {
                    orphaned.push(sha);
                }
            }
            Ok(orphaned)
        })
    }

    fn kb_stats(&self, kb_id: &str) -> Result<KbStats> {
        self.read(|c| {
            let mut stats = KbStats::default();
            let mut stmt = c.prepare_cached(
                "SELECT status, COUNT(*), COALESCE(SUM(chunk_count), 0), COALESCE(SUM(size), 0)
                 FROM documents WHERE kb_id = ?1 GROUP BY status",
            )?;
            let mut rows = stmt.query([kb_id])?;
            while let Some(r) = rows.next()? {
                let status: String = r.get(0)?;
                let n = r.get::<_, i64>(1)? as u64;
                match DocumentStatus::parse(&status) {
                    Some(DocumentStatus::Queued) => stats.queued = n,
                    Some(DocumentStatus::Processing) => stats.processing = n,
                    Some(DocumentStatus::Ready) => {
                        stats.ready = n;
                        stats.chunks = r.get::<_, i64>(2)? as u64;
                        stats.bytes = r.get::<_, i64>(3)? as u64;
                    }
                    Some(DocumentStatus::Failed) => stats.failed = n,
                    None => {}
                }
            }
            stats.stale = c.query_row(
                &format!(
                    "SELECT COUNT(*) FROM documents d JOIN kbs k ON k.id = d.kb_id
                          WHERE d.kb_id = ?1 AND {STALE}"
                ),
                [kb_id],
                |r| r.get::<_, i64>(0),
            )? as u64;
            Ok(stats)
        })
    }
}

impl DocumentStore for SqliteStore {
    fn insert_document(&self, doc: &NewDocument) -> Result<Inserted> {
        let metadata = serde_json::to_string(&doc.metadata).map_err(json_err)?;
        self.write(|tx| {
            let existing = tx
                .query_row(
                    &format!(
                        "SELECT {DOC_COLS} FROM documents
                         WHERE kb_id = ?1 AND sha256 = ?2 AND status != 'failed'
                         ORDER BY created_at DESC LIMIT 1"
                    ),
                    params![doc.kb_id, doc.sha256],
                    doc_row,
                )
                .optional()?;
            if let Some(existing) = existing {
                return Ok(Inserted {
                    document: existing.finish()?,
                    created: false,
                });
            }
            // Older versions under the same name: a ready one is replaced when the new one is
            // published; unfinished or failed ones are superseded now.
            let mut stmt =
                tx.prepare("SELECT id, status FROM documents WHERE kb_id = ?1 AND name = ?2")?;
            let same_name = stmt
                .query_map(params![doc.kb_id, doc.name], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            drop(stmt);
            let mut replaces = None;
            for (id, status) in same_name {
                if status == "ready" {
                    replaces = Some(id);
                } else {
                    // The bytes of a superseded version may still be shared; keep them.
                    tx.execute("DELETE FROM documents WHERE id = ?1", [&id])?;
                }
            }
            let id = new_id();
            let now = Utc::now();
            tx.execute(
                "INSERT INTO documents (id, kb_id, job_id, name, media_type, size, sha256, status,
                                        metadata, replaces, created_at, updated_at, password)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, ?9, ?10, ?10, ?11)",
                params![
                    id,
                    doc.kb_id,
                    doc.job_id,
                    doc.name,
                    doc.media_type,
                    doc.size as i64,
                    doc.sha256,
                    metadata,
                    replaces,
                    now,
                    doc.password
                ],
            )?;
            Ok(Inserted {
                document: get_doc(tx, &doc.kb_id, &id)?,
                created: true,
            })
        })
    }

    fn get_document(&self, kb_id: &str, id: &str) -> Result<Document> {
        self.read(|c| get_doc(c, kb_id, id))
    }

    fn list_documents(&self, kb_id: &str, query: &DocumentQuery) -> Result<Page<Document>> {
        self.read(|c| {
            let status = query.status.map(|s| s.as_str());
            let stale = if query.stale { STALE } else { "1" };
            let filter = format!(
                "FROM documents d JOIN kbs k ON k.id = d.kb_id
                 WHERE d.kb_id = ?1 AND (?2 IS NULL OR d.status = ?2) AND {stale}"
            );
            let total: i64 = c.query_row(
                &format!("SELECT COUNT(*) {filter}"),
                params![kb_id, status],
                |r| r.get(0),
            )?;
            let cols = DOC_COLS
                .split(", ")
                .map(|col| format!("d.{}", col.trim()))
                .collect::<Vec<_>>()
                .join(", ");
            let mut stmt = c.prepare(&format!(
                "SELECT {cols} {filter} ORDER BY d.created_at DESC, d.id DESC LIMIT ?3 OFFSET ?4"
            ))?;
            let items = stmt
                .query_map(
                    params![kb_id, status, query.limit as i64, query.offset as i64],
                    doc_row,
                )?
                .map(|r| r.map_err(StoreError::from).and_then(RawDoc::finish))
                .collect::<Result<Vec<_>>>()?;
            Ok(Page {
                items,
                total: total as u64,
            })
        })
    }

    fn unfinished_documents(&self) -> Result<Vec<Document>> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {DOC_COLS} FROM documents WHERE status IN ('queued', 'processing')
                 ORDER BY created_at, id"
            ))?;
            let items = stmt
                .query_map([], doc_row)?
                .map(|r| r.map_err(StoreError::from).and_then(RawDoc::finish))
                .collect::<Result<Vec<_>>>()?;
            Ok(items)
        })
    }

    fn count_unfinished(&self) -> Result<u64> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM documents WHERE status IN ('queued', 'processing')",
                [],
                |r| r.get::<_, i64>(0),
            )? as u64)
        })
    }

    fn mark_processing(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE documents SET status = 'processing', updated_at = ?2
                 WHERE id = ?1 AND status IN ('queued', 'processing')",
                params![id, Utc::now()],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound {
                    kind: "document",
                    id: id.to_owned(),
                });
            }
            Ok(())
        })
    }

    fn requeue_failed(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE documents SET status = 'queued', error_code = NULL, error = NULL,
                        updated_at = ?2
                 WHERE id = ?1 AND status = 'failed'",
                params![id, Utc::now()],
            )?;
            Ok(())
        })
    }

    fn mark_failed(&self, id: &str, code: &str, message: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE documents SET status = 'failed', error_code = ?2, error = ?3,
                        updated_at = ?4
                 WHERE id = ?1 AND status IN ('queued', 'processing')",
                params![id, code, message, Utc::now()],
            )?;
            Ok(())
        })
    }

    fn publish(&self, p: &Publish<'_>) -> Result<Published> {
        let warnings = serde_json::to_string(p.warnings).map_err(json_err)?;
        let extraction = serde_json::to_string(p.extraction).map_err(json_err)?;
        self.write(|tx| {
            let row: Option<(String, Option<String>, String, String)> = tx
                .query_row(
                    "SELECT kb_id, replaces, status, job_id FROM documents WHERE id = ?1",
                    [p.document_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let Some((kb_id, replaces, status, job_id)) = row.filter(|r| r.2 != "failed") else {
                // Deleted or superseded while it was being processed.
                return Err(StoreError::NotFound {
                    kind: "document",
                    id: p.document_id.to_owned(),
                });
            };
            if status == "ready" {
                return Err(StoreError::Conflict {
                    kind: "published document",
                    name: p.document_id.to_owned(),
                });
            }
            let generation: i64 =
                tx.query_row("SELECT generation FROM kbs WHERE id = ?1", [&kb_id], |r| {
                    r.get(0)
                })?;
            let chunk_ids = insert_chunks(tx, p.document_id, generation, &p.chunks)?;
            tx.execute(
                "UPDATE documents SET status = 'ready', chunk_count = ?2, pages = ?3,
                        warnings = ?4, error_code = NULL, error = NULL, replaces = NULL,
                        updated_at = ?5, embedding_model = ?6, chunk_max_tokens = ?7,
                        chunk_overlap_tokens = ?8, extraction = ?9
                 WHERE id = ?1",
                params![
                    p.document_id,
                    chunk_ids.len() as i64,
                    p.pages,
                    warnings,
                    Utc::now(),
                    p.embedding_model,
                    p.chunking.max_tokens,
                    p.chunking.overlap_tokens,
                    extraction
                ],
            )?;
            tx.execute(
                "UPDATE jobs SET chunks_embedded = chunks_embedded + ?2 WHERE id = ?1",
                params![job_id, chunk_ids.len() as i64],
            )?;
            let mut replaced = None;
            let mut orphaned = Vec::new();
            if let Some(old) = replaces {
                let old_exists: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM documents WHERE id = ?1)",
                    [&old],
                    |r| r.get(0),
                )?;
                if old_exists {
                    let ids = chunk_ids_of(tx, &old)?;
                    orphaned.extend(remove_document(tx, &old)?);
                    replaced = Some((old, ids));
                }
            }
            let removed = replaced.as_ref().map_or(&[][..], |(_, ids)| ids.as_slice());
            let index_seq = bump_seq(
                tx,
                &kb_id,
                ChangeKind::Publish,
                Some(p.document_id),
                removed,
            )?;
            Ok(Published {
                chunk_ids,
                replaced,
                index_seq,
                orphaned,
            })
        })
    }

    fn delete_document(&self, kb_id: &str, id: &str) -> Result<Deleted> {
        self.write(|tx| {
            get_doc(tx, kb_id, id)?;
            let chunk_ids = chunk_ids_of(tx, id)?;
            let orphaned = remove_document(tx, id)?.into_iter().collect();
            let index_seq = bump_seq(tx, kb_id, ChangeKind::Delete, Some(id), &chunk_ids)?;
            Ok(Deleted {
                chunk_ids,
                index_seq,
                orphaned,
            })
        })
    }

    fn kb_headings(&self, kb_id: &str, limit: u64) -> Result<Vec<Heading>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT d.name, c.heading_path, COUNT(*) FROM chunks c
                   JOIN documents d ON d.id = c.document_id
                   JOIN kbs k ON k.id = d.kb_id
                 WHERE d.kb_id = ?1 AND d.status = 'ready' AND c.generation = k.generation
                   AND c.heading_path <> '[]'
                   AND d.id IN (SELECT id FROM documents WHERE kb_id = ?1 AND status = 'ready'
                                ORDER BY updated_at DESC LIMIT 50)
                 GROUP BY d.id, c.heading_path ORDER BY MIN(c.id) LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(params![kb_id, limit as i64], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(document_name, path, n)| {
                    Ok(Heading {
                        document_name,
                        path: serde_json::from_str(&path).map_err(json_err)?,
                        chunks: n as u64,
                    })
                })
                .collect()
        })
    }

    fn list_chunks(&self, document_id: &str, offset: u64, limit: u64) -> Result<Vec<ChunkRecord>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "{CHUNK_SELECT} WHERE c.document_id = ?1
                   AND c.generation = (SELECT k.generation FROM kbs k WHERE k.id = d.kb_id)
                 ORDER BY c.ordinal LIMIT ?2 OFFSET ?3"
            ))?;
            let rows = stmt
                .query_map(params![document_id, limit as i64, offset as i64], chunk_row)?
                .map(|r| r.map_err(StoreError::from).and_then(finish_chunk))
                .collect::<Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    fn chunks_by_id(&self, ids: &[u64]) -> Result<Vec<ChunkRecord>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!("{CHUNK_SELECT} WHERE c.id = ?1"))?;
            let mut out = Vec::with_capacity(ids.len());
            for &id in ids {
                if let Some(row) = stmt.query_row([id as i64], chunk_row).optional()? {
                    out.push(finish_chunk(row)?);
                }
            }
            Ok(out)
        })
    }

    fn for_each_vector(
        &self,
        kb_id: &str,
        generation: Option<u64>,
        f: &mut dyn FnMut(StoredPoint) -> Result<()>,
    ) -> Result<u64> {
        self.read(|c| {
            // One read transaction: the rows and the sequence are one consistent snapshot.
            c.execute_batch("BEGIN")?;
            let out = (|| {
                let (seq, serving): (i64, i64) = c.query_row(
                    "SELECT index_seq, generation FROM kbs WHERE id = ?1",
                    [kb_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                let generation = generation.map(|g| g as i64).unwrap_or(serving);
                let mut stmt = c.prepare(
                    "SELECT c.id, c.document_id,
                            CASE WHEN c.context = '' THEN c.text
                                 ELSE c.context || char(10) || c.text END,
                            c.vector, d.metadata
                     FROM chunks c JOIN documents d ON d.id = c.document_id
                     WHERE d.kb_id = ?1 AND d.status = 'ready' AND c.generation = ?2
                     ORDER BY c.id",
                )?;
                let mut rows = stmt.query(params![kb_id, generation])?;
                let mut last_doc = String::new();
                let mut last_meta = Default::default();
                while let Some(r) = rows.next()? {
                    let document_id: String = r.get(1)?;
                    if document_id != last_doc {
                        let raw: String = r.get(4)?;
                        let map: serde_json::Map<String, serde_json::Value> =
                            serde_json::from_str(&raw).map_err(json_err)?;
                        last_meta = flatten_metadata(&map);
                        last_doc = document_id.clone();
                    }
                    f(StoredPoint {
                        chunk_id: r.get::<_, i64>(0)? as u64,
                        document_id,
                        text: r.get(2)?,
                        vector: crate::util::f32s_from_le(
                            r.get_ref(3)?
                                .as_blob()
                                .map_err(|e| StoreError::Database(e.to_string()))?,
                        ),
                        metadata: last_meta.clone(),
                    })?;
                }
                Ok(seq as u64)
            })();
            c.execute_batch("COMMIT")?;
            out
        })
    }
}

fn chunk_row(r: &Row<'_>) -> rusqlite::Result<(ChunkRecord, String)> {
    Ok((
        ChunkRecord {
            id: r.get::<_, i64>(0)? as u64,
            document_id: r.get(1)?,
            document_name: r.get(2)?,
            ordinal: r.get(3)?,
            start: r.get::<_, i64>(4)? as u64,
            end: r.get::<_, i64>(5)? as u64,
            text: r.get(6)?,
            tokens: r.get(7)?,
            page_start: r.get(8)?,
            page_end: r.get(9)?,
            heading_path: Vec::new(),
            hash: r.get(11)?,
            context: r.get(12)?,
            ocr_confidence: r.get(13)?,
        },
        r.get(10)?,
    ))
}

fn finish_chunk((mut chunk, headings): (ChunkRecord, String)) -> Result<ChunkRecord> {
    chunk.heading_path = serde_json::from_str(&headings).map_err(json_err)?;
    Ok(chunk)
}

impl JobStore for SqliteStore {
    fn create_job(&self, id: &str, tenant_id: &str, kb_id: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO jobs (id, tenant_id, kb_id, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![id, tenant_id, kb_id, Utc::now()],
            )?;
            Ok(())
        })?;
        Ok(())
    }

    fn job(&self, tenant_id: &str, id: &str) -> Result<Job> {
        self.read(|c| {
            let (kb_id, chunks_embedded, created_at) = c
                .query_row(
                    "SELECT kb_id, chunks_embedded, created_at FROM jobs
                     WHERE id = ?1 AND tenant_id = ?2",
                    params![id, tenant_id],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get(2)?)),
                )
                .optional()?
                .ok_or_else(|| StoreError::NotFound {
                    kind: "job",
                    id: id.to_owned(),
                })?;
            let mut job = Job {
                id: id.to_owned(),
                kb_id,
                total: 0,
                queued: 0,
                processing: 0,
                ready: 0,
                failed: 0,
                chunks_embedded: chunks_embedded as u64,
                errors: Vec::new(),
                created_at,
            };
            let mut stmt = c.prepare_cached(
                "SELECT id, name, status, error_code, error FROM documents WHERE job_id = ?1
                 ORDER BY created_at",
            )?;
            let mut rows = stmt.query([id])?;
            while let Some(r) = rows.next()? {
                job.total += 1;
                let status: String = r.get(2)?;
                match DocumentStatus::parse(&status) {
                    Some(DocumentStatus::Queued) => job.queued += 1,
                    Some(DocumentStatus::Processing) => job.processing += 1,
                    Some(DocumentStatus::Ready) => job.ready += 1,
                    Some(DocumentStatus::Failed) => {
                        job.failed += 1;
                        job.errors.push(JobError {
                            document_id: r.get(0)?,
                            name: r.get(1)?,
                            code: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                            message: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                        });
                    }
                    None => {}
                }
            }
            Ok(job)
        })
    }
}

impl GenerationStore for SqliteStore {
    fn begin_generation(&self, kb_id: &str) -> Result<u64> {
        self.write(|tx| {
            let serving: i64 =
                tx.query_row("SELECT generation FROM kbs WHERE id = ?1", [kb_id], |r| {
                    r.get(0)
                })?;
            tx.execute(
                "DELETE FROM chunks WHERE generation > ?2
                   AND document_id IN (SELECT id FROM documents WHERE kb_id = ?1)",
                params![kb_id, serving],
            )?;
            Ok(serving as u64 + 1)
        })
    }

    fn documents_missing_generation(&self, kb_id: &str, generation: u64) -> Result<Vec<Document>> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {DOC_COLS} FROM documents d WHERE d.kb_id = ?1 AND d.status = 'ready'
                   AND NOT EXISTS (SELECT 1 FROM chunks c
                                   WHERE c.document_id = d.id AND c.generation = ?2)
                 ORDER BY d.created_at, d.id"
            ))?;
            let items = stmt
                .query_map(params![kb_id, generation as i64], doc_row)?
                .map(|r| r.map_err(StoreError::from).and_then(RawDoc::finish))
                .collect::<Result<Vec<_>>>()?;
            Ok(items)
        })
    }

    fn stage_chunks(
        &self,
        document_id: &str,
        generation: u64,
        chunks: &[ChunkRow<'_>],
    ) -> Result<Option<Vec<u64>>> {
        self.write(|tx| {
            let live: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM documents WHERE id = ?1 AND status = 'ready')",
                [document_id],
                |r| r.get(0),
            )?;
            if !live {
                return Ok(None);
            }
            let mut stmt = tx.prepare_cached(
                "SELECT id FROM chunks WHERE document_id = ?1 AND generation = ?2 ORDER BY ordinal",
            )?;
            let existing = stmt
                .query_map(params![document_id, generation as i64], |r| {
                    r.get::<_, i64>(0)
                })?
                .map(|r| r.map(|v| v as u64))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            drop(stmt);
            if !existing.is_empty() {
                return Ok(Some(existing));
            }
            Ok(Some(insert_chunks(
                tx,
                document_id,
                generation as i64,
                chunks,
            )?))
        })
    }

    fn generation_chunk_ids(&self, kb_id: &str, generation: u64) -> Result<Vec<u64>> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id
                 WHERE d.kb_id = ?1 AND d.status = 'ready' AND c.generation = ?2 ORDER BY c.id",
            )?;
            let ids = stmt
                .query_map(params![kb_id, generation as i64], |r| r.get::<_, i64>(0))?
                .map(|r| r.map(|v| v as u64))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(ids)
        })
    }

    fn switch_generation(&self, kb_id: &str, switch: &GenerationSwitch) -> Result<Option<u64>> {
        self.write(|tx| {
            let serving: i64 =
                tx.query_row("SELECT generation FROM kbs WHERE id = ?1", [kb_id], |r| {
                    r.get(0)
                })?;
            if serving as u64 >= switch.generation {
                return Ok(None);
            }
            tx.execute(
                "UPDATE kbs SET generation = ?2, embedding_model = ?3, model_source = ?4,
                        dimension = ?5, chunk_max_tokens = ?6, chunk_overlap_tokens = ?7
                 WHERE id = ?1",
                params![
                    kb_id,
                    switch.generation as i64,
                    switch.embedding_model,
                    switch.model_source,
                    switch.dimension,
                    switch.chunking.max_tokens,
                    switch.chunking.overlap_tokens
                ],
            )?;
            tx.execute(
                "DELETE FROM chunks WHERE generation != ?2
                   AND document_id IN (SELECT id FROM documents WHERE kb_id = ?1)",
                params![kb_id, switch.generation as i64],
            )?;
            tx.execute(
                "UPDATE documents SET embedding_model = ?2, chunk_max_tokens = ?3,
                        chunk_overlap_tokens = ?4,
                        chunk_count = (SELECT COUNT(*) FROM chunks c WHERE c.document_id = documents.id)
                 WHERE kb_id = ?1 AND status = 'ready'",
                params![
                    kb_id,
                    switch.embedding_model,
                    switch.chunking.max_tokens,
                    switch.chunking.overlap_tokens
                ],
            )?;
            Ok(Some(bump_seq(tx, kb_id, ChangeKind::Switch, None, &[])?))
        })
    }

    fn drop_generation(&self, kb_id: &str, generation: u64) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM chunks WHERE generation = ?2
                   AND generation != (SELECT generation FROM kbs WHERE id = ?1)
                   AND document_id IN (SELECT id FROM documents WHERE kb_id = ?1)",
                params![kb_id, generation as i64],
            )?;
            Ok(())
        })
    }
}
