//! The shared store: a PostgreSQL database reached through a connection pool, for deployments
//! that outgrow one SQLite file (several processes over one database; backups and replication
//! the operator already runs).
//!
//! Same records and guarantees as [`super::SqliteStore`]: every write is one transaction,
//! committed before the call returns. SQLite serialises writers; here every write runs at
//! `SERIALIZABLE`, so a transaction that raced another is retried whole (from a fresh
//! snapshot) instead of acting on what it read. Invariants that span processes are
//! constraints (see the schema). A lost connection is [`StoreError::Busy`] (retryable) unless
//! it was lost during a commit, whose outcome is then unknown.
//!
//! It must never hold a connection across a model call or a network call other than its own.

use std::time::{Duration, Instant};

use chrono::Utc;
use postgres::error::SqlState;
use postgres::{IsolationLevel, Row};

use super::codec::{json_err, new_id, vector_bytes, CHUNK_SELECT, DOC_COLS, KB_COLS, KEY_SELECT};
use super::sections::Local;
use super::types::*;
use super::{
    ChangeKind, DocumentStore, GenerationStore, HealthStore, Held, JobStore, KbStore, Result,
    Section, SectionStore, StoreError, TenantStore,
};

mod agents;
mod blobs;
mod changes;
mod gateway;
mod migrate;
mod ratelimits;
mod replicas;
mod session;
mod sources;
mod tls;
mod workflows;

pub use blobs::PgBlobStore;
use session::{Session, Statements};
use tls::Tls;
pub use tls::TlsOptions;

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user:password@host:port/database?…` (libpq's URL or key=value form).
    pub url: String,
    /// Connections kept at most.
    pub pool_size: u32,
    /// A statement running longer is cancelled by the server (0: no limit).
    pub statement_timeout: Duration,
    /// How long a caller waits for a free connection or a new one.
    pub connect_timeout: Duration,
    /// Certificates for encrypted connections (used with the URL's `sslmode`).
    pub tls: TlsOptions,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            url: String::new(),
            pool_size: 16,
            statement_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            tls: TlsOptions::default(),
        }
    }
}

/// Opens connections for the pool.
#[derive(Debug)]
struct Manager {
    config: postgres::Config,
    tls: Tls,
}

/// A connection that is safe to drop anywhere. The synchronous client closes its connection
/// by blocking on its own runtime, which panics on a thread that drives the service's async
/// runtime (where the last reference to the store may go at shutdown): there the client is
/// dropped on a thread of its own.
struct Client(Option<postgres::Client>, Statements);

impl Client {
    fn new(client: postgres::Client) -> Self {
        Client(Some(client), Statements::default())
    }

    /// The connection with its statement cache, for a [`Session`].
    fn parts(&mut self) -> (&mut postgres::Client, &mut Statements) {
        let client = self
            .0
            .as_mut()
            .expect("a pooled connection is present until dropped");
        (client, &mut self.1)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                std::thread::scope(|s| {
                    s.spawn(move || drop(client));
                });
            }
        }
    }
}

impl std::ops::Deref for Client {
    type Target = postgres::Client;
    fn deref(&self) -> &postgres::Client {
        self.0
            .as_ref()
            .expect("a pooled connection is present until dropped")
    }
}

impl std::ops::DerefMut for Client {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        self.0
            .as_mut()
            .expect("a pooled connection is present until dropped")
    }
}

/// A failed connection attempt, saying why to the end of its causes (the pool keeps only
/// the text, and "error performing TLS handshake" alone does not tell an operator what to fix).
#[derive(Debug)]
struct ConnectError(String);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

impl From<postgres::Error> for ConnectError {
    fn from(e: postgres::Error) -> Self {
        let mut text = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            let more = c.to_string();
            if !text.contains(&more) {
                text.push_str(": ");
                text.push_str(&more);
            }
            cause = c.source();
        }
        ConnectError(text)
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Client;
    type Error = ConnectError;

    fn connect(&self) -> std::result::Result<Client, ConnectError> {
        Ok(Client::new(self.tls.connect(&self.config)?))
    }

    fn is_valid(&self, conn: &mut Client) -> std::result::Result<(), ConnectError> {
        Ok(conn.simple_query("").map(|_| ())?)
    }

    fn has_broken(&self, conn: &mut Client) -> bool {
        conn.is_closed()
    }
}

type Pool = r2d2::Pool<Manager>;
type Conn = r2d2::PooledConnection<Manager>;

/// How long a readiness check waits for a connection.
const PING_WAIT: Duration = Duration::from_secs(2);

/// Attempts of a write that keeps meeting serialization failures or lost connections.
const WRITE_ATTEMPTS: u32 = 12;

/// PostgreSQL-backed [`super::Store`].
pub struct PgStore {
    pool: Pool,
    /// Where sections' own connections come from.
    config: postgres::Config,
    tls: Tls,
    /// Per section, this process's turn and the connection holding the section's advisory
    /// lock (kept for the next turn; outside the pool, so waiting callers hold no pooled
    /// connection and a lock can never return to the pool held).
    sections: Local<Option<Client>>,
    /// The connection that LISTENs for index changes (outside the pool: a listening session
    /// must stay the same one), opened on the first wait.
    listener: std::sync::Mutex<Option<Client>>,
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        match e.code() {
            Some(c)
                if *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED =>
            {
                StoreError::Busy(format!("concurrent change: {e}"))
            }
            Some(c) if *c == SqlState::QUERY_CANCELED || *c == SqlState::LOCK_NOT_AVAILABLE => {
                StoreError::Busy(format!("statement timed out: {e}"))
            }
            Some(c) if *c == SqlState::ADMIN_SHUTDOWN || *c == SqlState::CANNOT_CONNECT_NOW => {
                StoreError::Busy(format!("database restarting: {e}"))
            }
            Some(c) if *c == SqlState::CHARACTER_NOT_IN_REPERTOIRE => {
                StoreError::Invalid("text must not contain the NUL character (U+0000)".into())
            }
            // A write referring to a row deleted meanwhile (a chat racing its agent's DELETE).
            Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => StoreError::NotFound {
                kind: "record this change refers to",
                id: "deleted meanwhile".into(),
            },
            Some(_) => StoreError::Database(e.to_string()),
            // No SQLSTATE: the connection failed (closed, reset, refused).
            None => StoreError::Busy(format!("database connection: {e}")),
        }
    }
}

fn pool_err(e: r2d2::Error) -> StoreError {
    StoreError::Busy(format!("no database connection: {e}"))
}

impl PgStore {
    /// Connects (waiting up to the connect timeout for the server) and migrates the schema
    /// to the latest version; several processes may do so at once.
    pub fn connect(options: &PgOptions) -> Result<Self> {
        let mut config: postgres::Config = options
            .url
            .parse()
            .map_err(|e| StoreError::Database(format!("store URL: {e}")))?;
        config.connect_timeout(options.connect_timeout);
        config.application_name("groundwork");
        let timeout_ms = options.statement_timeout.as_millis();
        config.options(&format!("-c statement_timeout={timeout_ms}"));
        let tls = Tls::choose(config.get_ssl_mode(), &options.tls)?;
        let manager = Manager {
            config: config.clone(),
            tls: tls.clone(),
        };
        let pool = r2d2::Pool::builder()
            .max_size(options.pool_size.max(1))
            .min_idle(Some(0))
            .connection_timeout(options.connect_timeout)
            // A broken connection is noticed on use (and the call retried), not by a probe
            // round trip before every call.
            .test_on_check_out(false)
            .build_unchecked(manager);
        let store = Self {
            pool,
            config,
            tls,
            sections: Local::default(),
            listener: std::sync::Mutex::new(None),
        };
        off_runtime(|| {
            let mut conn = store.conn()?;
            migrate::to_latest(&mut conn)
        })?;
        Ok(store)
    }

    /// A connection of the pool for a whole-store pass (the copy from SQLite); blocking, so
    /// for a thread of its own, not the async runtime.
    pub(in crate::store) fn with_client<T>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> Result<T>,
    ) -> Result<T> {
        off_runtime(|| {
            let mut conn = self.conn()?;
            let client: &mut postgres::Client = &mut conn;
            f(client)
        })
    }

    fn conn(&self) -> Result<Conn> {
        self.pool.get().map_err(pool_err)
    }

    /// Runs a read on a pooled connection (statements see committed data as of their start);
    /// retried on a lost connection.
    fn read<T>(&self, mut f: impl FnMut(&mut Session<'_, '_>) -> Result<T>) -> Result<T> {
        let started = Instant::now();
        let mut attempt = 0;
        let out = loop {
            attempt += 1;
            let out = off_runtime(|| {
                let mut conn = self.conn()?;
                let (client, statements) = conn.parts();
                f(&mut Session::client(client, statements))
            });
            match out {
                Err(StoreError::Busy(_)) if attempt < 3 => backoff(attempt),
                // A lookup by a value no stored text can hold finds nothing.
                Err(StoreError::Invalid(reason)) => {
                    break Err(StoreError::NotFound {
                        kind: "record",
                        id: reason,
                    })
                }
                out => break out,
            }
        };
        metrics::histogram!("groundwork_store_query_seconds", "kind" => "read")
            .record(started.elapsed().as_secs_f64());
        out
    }

    /// Runs `f` in one `SERIALIZABLE` transaction and commits it; a serialization failure or
    /// a connection lost before the commit runs it again from the start.
    fn write<T>(&self, f: impl FnMut(&mut Session<'_, '_>) -> Result<T>) -> Result<T> {
        self.write_with(true, f)
    }

    /// A write of the workflow engine's own bookkeeping (see [`super::WorkflowStore`]): the
    /// commit does not wait for the WAL flush (`synchronous_commit = off`), so a server crash
    /// may drop the latest of them, never an earlier one without the later ones.
    fn write_checkpoint<T>(&self, f: impl FnMut(&mut Session<'_, '_>) -> Result<T>) -> Result<T> {
        self.write_with(false, f)
    }

    /// A workflow claim: like [`Self::write_checkpoint`] but at `READ COMMITTED`, for a
    /// transaction that first queues on an advisory lock and must then see what the holders
    /// before it committed (a serializable snapshot would predate its turn).
    fn write_claims<T>(&self, f: impl FnMut(&mut Session<'_, '_>) -> Result<T>) -> Result<T> {
        self.write_at(IsolationLevel::ReadCommitted, false, f)
    }

    /// A durable write at `READ COMMITTED`, for conditional updates that must see (and wait
    /// for) concurrent writers of the same rows instead of failing on them: each statement
    /// re-reads the rows it changes.
    fn write_committed<T>(&self, f: impl FnMut(&mut Session<'_, '_>) -> Result<T>) -> Result<T> {
        self.write_at(IsolationLevel::ReadCommitted, true, f)
    }

    fn write_with<T>(
        &self,
        durable: bool,
        f: impl FnMut(&mut Session<'_, '_>) -> Result<T>,
    ) -> Result<T> {
        self.write_at(IsolationLevel::Serializable, durable, f)
    }

    fn write_at<T>(
        &self,
        isolation: IsolationLevel,
        durable: bool,
        mut f: impl FnMut(&mut Session<'_, '_>) -> Result<T>,
    ) -> Result<T> {
        let started = Instant::now();
        let mut attempt = 0;
        let out = loop {
            attempt += 1;
            let out = off_runtime(|| -> std::result::Result<T, Failed> {
                let mut conn = self.conn()?;
                let (client, statements) = conn.parts();
                let mut tx = client
                    .build_transaction()
                    .isolation_level(isolation)
                    .start()
                    .map_err(StoreError::from)?;
                if !durable {
                    tx.batch_execute("SET LOCAL synchronous_commit = off")
                        .map_err(StoreError::from)?;
                }
                let out = f(&mut Session::tx(&mut tx, statements))?;
                tx.commit().map_err(Failed::at_commit)?;
                Ok(out)
            });
            match out {
                Ok(v) => break Ok(v),
                // The commit may have happened: only the caller can tell whether to redo it.
                Err(Failed::CommitCut(e)) => {
                    break Err(StoreError::Busy(format!(
                        "outcome unknown, the commit was cut: {e}"
                    )))
                }
                Err(Failed::Before(StoreError::Busy(_))) if attempt < WRITE_ATTEMPTS => {
                    backoff(attempt)
                }
                Err(Failed::Before(e)) => break Err(e),
            }
        };
        metrics::histogram!("groundwork_store_query_seconds", "kind" => "write")
            .record(started.elapsed().as_secs_f64());
        out
    }
}

/// How one attempt of a write failed.
enum Failed {
    /// Before or at the commit, with nothing committed: retryable when [`StoreError::Busy`].
    Before(StoreError),
    /// The connection was lost while the commit was under way: it may or may not have landed.
    CommitCut(postgres::Error),
}

impl Failed {
    /// A commit refused by the server (a serialization failure detected at commit) committed
    /// nothing; a commit without an answer (no SQLSTATE: the connection failed) is unknown.
    fn at_commit(e: postgres::Error) -> Self {
        if e.code().is_some() {
            Failed::Before(e.into())
        } else {
            Failed::CommitCut(e)
        }
    }
}

impl From<StoreError> for Failed {
    fn from(e: StoreError) -> Self {
        Failed::Before(e)
    }
}

/// Runs blocking database work. The synchronous client blocks on a runtime of its own, which
/// tokio forbids on a thread that drives async tasks; callers belong on blocking threads, and
/// one that is not (a worker of a multi-thread runtime) has the executor hand its other tasks
/// to another worker meanwhile instead of panicking.
fn off_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// A short randomised pause before attempt `attempt + 1` (1 ms growing to ~0.5 s).
fn backoff(attempt: u32) {
    let base = 1u64 << attempt.min(9);
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % base.max(1);
    std::thread::sleep(Duration::from_millis(base + jitter));
}

/// A count from the API (a limit, an offset) as a BIGINT parameter: at most `i64::MAX`,
/// which no table reaches.
fn count(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A counter or size read from a BIGINT column.
fn u(r: &Row, i: usize) -> u64 {
    r.get::<_, i64>(i) as u64
}

fn u32_opt(r: &Row, i: usize) -> Option<u32> {
    r.get::<_, Option<i64>>(i).map(|v| v as u32)
}

fn kb_row(r: &Row) -> Kb {
    Kb {
        id: r.get(0),
        tenant_id: r.get(1),
        name: r.get(2),
        description: r.get(3),
        embedding_model: r.get(4),
        dimension: u(r, 5) as u32,
        chunking: ChunkingStamp {
            max_tokens: u(r, 6) as u32,
            overlap_tokens: u(r, 7) as u32,
        },
        index_seq: u(r, 8),
        created_at: r.get(9),
        generation: u(r, 10),
        model_source: r.get(11),
        rerank: KbRerank::from_columns(r.get(12), r.get(13)),
    }
}

/// A ready document (alias `d`) whose chunks were not made with its KB's (alias `k`) settings.
const STALE: &str = "d.status = 'ready' AND (d.embedding_model IS DISTINCT FROM k.embedding_model \
    OR d.chunk_max_tokens IS DISTINCT FROM k.chunk_max_tokens \
    OR d.chunk_overlap_tokens IS DISTINCT FROM k.chunk_overlap_tokens)";

fn doc_row(r: &Row) -> Result<Document> {
    let status: String = r.get(7);
    let metadata: String = r.get(10);
    let warnings: String = r.get(13);
    let extraction: Option<String> = r.get(20);
    Ok(Document {
        id: r.get(0),
        kb_id: r.get(1),
        job_id: r.get(2),
        name: r.get(3),
        media_type: r.get(4),
        size: u(r, 5),
        sha256: r.get(6),
        status: DocumentStatus::parse(&status)
            .ok_or_else(|| StoreError::Database(format!("unknown status {status}")))?,
        error_code: r.get(8),
        error: r.get(9),
        metadata: serde_json::from_str(&metadata).map_err(json_err)?,
        chunk_count: u(r, 11),
        pages: u32_opt(r, 12),
        warnings: serde_json::from_str(&warnings).map_err(json_err)?,
        replaces: r.get(14),
        created_at: r.get(15),
        updated_at: r.get(16),
        embedding_model: r.get(17),
        chunking: match (u32_opt(r, 18), u32_opt(r, 19)) {
            (Some(max_tokens), Some(overlap_tokens)) => Some(ChunkingStamp {
                max_tokens,
                overlap_tokens,
            }),
            _ => None,
        },
        extraction: extraction
            .map(|json| serde_json::from_str(&json).map_err(json_err))
            .transpose()?,
        password: r.get(21),
    })
}

fn docs(rows: Vec<Row>) -> Result<Vec<Document>> {
    rows.iter().map(doc_row).collect()
}

fn get_doc(c: &mut Session<'_, '_>, kb_id: &str, id: &str) -> Result<Document> {
    let row = c.query_opt(
        &format!("SELECT {DOC_COLS} FROM documents WHERE id = $1 AND kb_id = $2"),
        &[&id, &kb_id],
    )?;
    doc_row(&row.ok_or_else(|| StoreError::NotFound {
        kind: "document",
        id: id.to_owned(),
    })?)
}

fn ids(rows: Vec<Row>) -> Vec<u64> {
    rows.iter().map(|r| u(r, 0)).collect()
}

/// Ids of a document's chunks in the serving generation (those an index holds).
fn chunk_ids_of(c: &mut Session<'_, '_>, document_id: &str) -> Result<Vec<u64>> {
    Ok(ids(c.query(
        "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id
         JOIN kbs k ON k.id = d.kb_id
         WHERE c.document_id = $1 AND c.generation = k.generation ORDER BY c.id",
        &[&document_id],
    )?))
}

/// Inserts chunks of one generation in one statement; returns their ids in order.
fn insert_chunks(
    tx: &mut Session<'_, '_>,
    document_id: &str,
    generation: i64,
    chunks: &[ChunkRow<'_>],
) -> Result<Vec<u64>> {
    if chunks.is_empty() {
        return Ok(Vec::new());
    }
    let mut ordinals = Vec::with_capacity(chunks.len());
    let mut starts = Vec::with_capacity(chunks.len());
    let mut ends = Vec::with_capacity(chunks.len());
    let mut texts = Vec::with_capacity(chunks.len());
    let mut tokens = Vec::with_capacity(chunks.len());
    let mut page_starts = Vec::with_capacity(chunks.len());
    let mut page_ends = Vec::with_capacity(chunks.len());
    let mut headings = Vec::with_capacity(chunks.len());
    let mut hashes = Vec::with_capacity(chunks.len());
    let mut vectors = Vec::with_capacity(chunks.len());
    let mut contexts = Vec::with_capacity(chunks.len());
    let mut confidences = Vec::with_capacity(chunks.len());
    for c in chunks {
        ordinals.push(i64::from(c.ordinal));
        starts.push(c.start as i64);
        ends.push(c.end as i64);
        texts.push(c.text);
        tokens.push(i64::from(c.tokens));
        page_starts.push(c.pages.map(|p| i64::from(p.0)));
        page_ends.push(c.pages.map(|p| i64::from(p.1)));
        headings.push(serde_json::to_string(c.heading_path).map_err(json_err)?);
        hashes.push(c.hash);
        vectors.push(vector_bytes(c.vector));
        contexts.push(c.context);
        confidences.push(c.ocr_confidence);
    }
    // One round trip for the whole document; WITH ORDINALITY keeps the ids in input order.
    let rows = tx.query(
        "INSERT INTO chunks (document_id, generation, ordinal, start_offset, end_offset, text,
                             tokens, page_start, page_end, heading_path, hash, vector, context,
                             ocr_confidence)
         SELECT $1, $2, o, s, e, t, n, ps, pe, h, hs, v, cx, oc
         FROM unnest($3::BIGINT[], $4::BIGINT[], $5::BIGINT[], $6::TEXT[], $7::BIGINT[],
                     $8::BIGINT[], $9::BIGINT[], $10::TEXT[], $11::TEXT[], $12::BYTEA[],
                     $13::TEXT[], $14::REAL[])
              WITH ORDINALITY AS x(o, s, e, t, n, ps, pe, h, hs, v, cx, oc, i)
         ORDER BY i
         RETURNING id",
        &[
            &document_id,
            &generation,
            &ordinals,
            &starts,
            &ends,
            &texts,
            &tokens,
            &page_starts,
            &page_ends,
            &headings,
            &hashes,
            &vectors,
            &contexts,
            &confidences,
        ],
    )?;
    // RETURNING follows the insertion order, which follows ORDER BY i; identity values are
    // handed out in that order too, so sorting restores it whatever the row order returned.
    let mut out = ids(rows);
    out.sort_unstable();
    Ok(out)
}

/// Removes a document row (chunks cascade); returns its content hash if now unreferenced.
fn remove_document(tx: &mut Session<'_, '_>, id: &str) -> Result<Option<String>> {
    let sha: Option<String> = tx
        .query_opt(
            "DELETE FROM documents WHERE id = $1 RETURNING sha256",
            &[&id],
        )?
        .map(|r| r.get(0));
    Ok(match sha {
        Some(sha) => {
            let still: bool = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM documents WHERE sha256 = $1)",
                    &[&sha],
                )?
                .get(0);
            (!still).then_some(sha)
        }
        None => None,
    })
}

/// Advances a knowledge base's index sequence, logs what changed at the new number and
/// notifies the replicas that follow the log (delivered when the transaction commits).
fn bump_seq(
    tx: &mut Session<'_, '_>,
    kb_id: &str,
    kind: ChangeKind,
    document_id: Option<&str>,
    removed: &[u64],
) -> Result<u64> {
    let row = tx.query_one(
        "UPDATE kbs SET index_seq = index_seq + 1 WHERE id = $1 RETURNING index_seq",
        &[&kb_id],
    )?;
    let seq = u(&row, 0);
    let removed = serde_json::to_string(removed).map_err(json_err)?;
    tx.execute(
        "INSERT INTO index_changes (kb_id, seq, kind, document_id, removed, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &kb_id,
            &(seq as i64),
            &kind.as_str(),
            &document_id,
            &removed,
            &Utc::now(),
        ],
    )?;
    // `SEQ:KB`: a listener whose index is already there (the writer's own) reads nothing.
    tx.execute(
        "SELECT pg_notify('groundwork_index', $1)",
        &[&format!("{seq}:{kb_id}")],
    )?;
    Ok(seq)
}

fn key_row(r: &Row) -> ApiKeyRecord {
    let scopes: String = r.get(5);
    ApiKeyRecord {
        key_id: r.get(0),
        tenant_id: r.get(1),
        tenant_name: r.get(2),
        name: r.get(3),
        secret_hash: r.get(4),
        scopes: scopes.split(',').filter_map(Scope::parse).collect(),
        created_at: r.get(6),
        revoked_at: r.get(7),
    }
}

/// The first key of every advisory lock Groundwork takes ("GW"); the second is the section's
/// (or [`CLAIMS_KEY`]).
const ADVISORY_CLASS: i32 = 0x4757;

/// The second key of the lock workflow claims queue on (apart from every section's).
const CLAIMS_KEY: i32 = 100;

/// A section held: this process's turn, and the server's advisory lock on the connection.
struct SectionGuard<'a> {
    turn: std::sync::MutexGuard<'a, Option<Client>>,
    section: Section,
}

impl Drop for SectionGuard<'_> {
    fn drop(&mut self) {
        let key = self.section.number();
        let released = off_runtime(|| {
            self.turn.as_mut().map(|c| {
                c.query_one(
                    "SELECT pg_advisory_unlock($1, $2)",
                    &[&ADVISORY_CLASS, &key],
                )
            })
        });
        if !matches!(released, Some(Ok(_))) {
            // Closing the session releases its locks on the server.
            tracing::warn!(
                section = ?self.section,
                "could not leave a section; closing its connection"
            );
            *self.turn = None;
        }
    }
}

impl HealthStore for PgStore {
    fn ping(&self) -> Result<()> {
        // Once, and soon: readiness reports the database as it is now, not once a connection
        // could be made after retrying for the whole connect timeout.
        off_runtime(|| {
            let mut conn = match self.pool.try_get() {
                Some(idle) => idle,
                None => self
                    .pool
                    .get_timeout(PING_WAIT.min(self.pool.connection_timeout()))
                    .map_err(pool_err)?,
            };
            Ok(conn.simple_query("SELECT 1").map(|_| ())?)
        })
    }

    fn pool_use(&self) -> Option<PoolUse> {
        let state = self.pool.state();
        Some(PoolUse {
            open: state.connections,
            idle: state.idle_connections,
            max: self.pool.max_size(),
        })
    }
}

impl SectionStore for PgStore {
    fn enter(&self, section: Section) -> Result<Held<'_>> {
        let mut turn = self.sections.lock(section);
        let key = section.number();
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let out = off_runtime(|| -> Result<()> {
                if turn.as_ref().is_none_or(|c| c.is_closed()) {
                    *turn = Some(Client::new(self.tls.connect(&self.config)?));
                }
                let client = turn.as_mut().expect("connected above");
                client.query_one("SELECT pg_advisory_lock($1, $2)", &[&ADVISORY_CLASS, &key])?;
                Ok(())
            });
            match out {
                Ok(()) => break,
                Err(e) => {
                    *turn = None;
                    if !e.is_retryable() || attempt >= 3 {
                        return Err(e);
                    }
                    backoff(attempt);
                }
            }
        }
        metrics::histogram!("groundwork_store_query_seconds", "kind" => "section")
            .record(started.elapsed().as_secs_f64());
        Ok(Held::new(SectionGuard { turn, section }))
    }
}

impl TenantStore for PgStore {
    fn ensure_tenant(&self, name: &str) -> Result<Tenant> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING",
                &[&new_id(), &name, &Utc::now()],
            )?;
            let r = tx.query_one(
                "SELECT id, name, created_at FROM tenants WHERE name = $1",
                &[&name],
            )?;
            Ok(Tenant {
                id: r.get(0),
                name: r.get(1),
                created_at: r.get(2),
            })
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
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &key.key_id,
                    &key.tenant_id,
                    &key.name,
                    &key.secret_hash,
                    &scopes,
                    &Utc::now(),
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
            Ok(c.query_opt(
                &format!("{KEY_SELECT} WHERE k.key_id = $1 AND k.revoked_at IS NULL"),
                &[&key_id],
            )?
            .as_ref()
            .map(key_row))
        })
    }

    fn has_keys(&self) -> Result<bool> {
        self.read(|c| {
            Ok(c.query_one(
                "SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL)",
                &[],
            )?
            .get(0))
        })
    }

    fn list_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        self.read(|c| {
            Ok(
                c.query(&format!("{KEY_SELECT} ORDER BY k.created_at"), &[])?
                    .iter()
                    .map(key_row)
                    .collect(),
            )
        })
    }

    fn revoke_key(&self, key_id: &str) -> Result<bool> {
        self.write(|tx| {
            Ok(tx.execute(
                "UPDATE api_keys SET revoked_at = $2 WHERE key_id = $1 AND revoked_at IS NULL",
                &[&key_id, &Utc::now()],
            )? > 0)
        })
    }
}

impl KbStore for PgStore {
    fn create_kb(&self, kb: &NewKb) -> Result<Kb> {
        let id = new_id();
        self.write(|tx| {
            // The unique (tenant, name) constraint decides between two processes creating
            // the same name at once.
            let row = tx.query_opt(
                &format!(
                    "INSERT INTO kbs (id, tenant_id, name, description, embedding_model,
                                      dimension, chunk_max_tokens, chunk_overlap_tokens,
                                      created_at, model_source, rerank_model, rerank_candidates)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                     ON CONFLICT (tenant_id, name) DO NOTHING
                     RETURNING {KB_COLS}"
                ),
                &[
                    &id,
                    &kb.tenant_id,
                    &kb.name,
                    &kb.description,
                    &kb.embedding_model,
                    &i64::from(kb.dimension),
                    &i64::from(kb.chunking.max_tokens),
                    &i64::from(kb.chunking.overlap_tokens),
                    &Utc::now(),
                    &kb.model_source,
                    &kb.rerank.as_ref().map(|r| r.model.clone()),
                    &kb.rerank.as_ref().and_then(|r| r.candidates).map(i64::from),
                ],
            )?;
            row.as_ref()
                .map(kb_row)
                .ok_or_else(|| StoreError::Conflict {
                    kind: "knowledge base",
                    name: kb.name.clone(),
                })
        })
    }

    fn list_kbs(&self, tenant_id: &str) -> Result<Vec<Kb>> {
        self.read(|c| {
            Ok(c.query(
                &format!("SELECT {KB_COLS} FROM kbs WHERE tenant_id = $1 ORDER BY name"),
                &[&tenant_id],
            )?
            .iter()
            .map(kb_row)
            .collect())
        })
    }

    fn all_kbs(&self) -> Result<Vec<Kb>> {
        self.read(|c| {
            Ok(c.query(
                &format!("SELECT {KB_COLS} FROM kbs ORDER BY created_at"),
                &[],
            )?
            .iter()
            .map(kb_row)
            .collect())
        })
    }

    fn get_kb(&self, tenant_id: &str, id_or_name: &str) -> Result<Kb> {
        self.read(|c| {
            c.query_opt(
                &format!(
                    "SELECT {KB_COLS} FROM kbs WHERE tenant_id = $1 AND (id = $2 OR name = $2)
                     ORDER BY id = $2 DESC LIMIT 1"
                ),
                &[&tenant_id, &id_or_name],
            )?
            .as_ref()
            .map(kb_row)
            .ok_or_else(|| StoreError::NotFound {
                kind: "knowledge base",
                id: id_or_name.to_owned(),
            })
        })
    }

    fn kb_by_id(&self, id: &str) -> Result<Kb> {
        self.read(|c| {
            c.query_opt(&format!("SELECT {KB_COLS} FROM kbs WHERE id = $1"), &[&id])?
                .as_ref()
                .map(kb_row)
                .ok_or_else(|| StoreError::NotFound {
                    kind: "knowledge base",
                    id: id.to_owned(),
                })
        })
    }

    fn set_kb_rerank(&self, kb_id: &str, rerank: Option<&KbRerank>) -> Result<Kb> {
        self.write(|tx| {
            let row = tx.query_opt(
                &format!(
                    "UPDATE kbs SET rerank_model = $2, rerank_candidates = $3 WHERE id = $1
                     RETURNING {KB_COLS}"
                ),
                &[
                    &kb_id,
                    &rerank.map(|r| r.model.clone()),
                    &rerank.and_then(|r| r.candidates).map(i64::from),
                ],
            )?;
            row.as_ref()
                .map(kb_row)
                .ok_or_else(|| StoreError::NotFound {
                    kind: "knowledge base",
                    id: kb_id.to_owned(),
                })
        })
    }

    fn delete_kb(&self, kb_id: &str) -> Result<Vec<String>> {
        self.write(|tx| {
            let shas: Vec<String> = tx
                .query(
                    "SELECT DISTINCT sha256 FROM documents WHERE kb_id = $1",
                    &[&kb_id],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if tx.execute("DELETE FROM kbs WHERE id = $1", &[&kb_id])? == 0 {
                return Err(StoreError::NotFound {
                    kind: "knowledge base",
                    id: kb_id.to_owned(),
                });
            }
            Ok(tx
                .query(
                    "SELECT s FROM unnest($1::TEXT[]) s
                     WHERE NOT EXISTS (SELECT 1 FROM documents WHERE sha256 = s)",
                    &[&shas],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
    }

    fn kb_stats(&self, kb_id: &str) -> Result<KbStats> {
        self.read(|c| {
            let mut stats = KbStats::default();
            for r in c.query(
                "SELECT status, COUNT(*), COALESCE(SUM(chunk_count), 0)::BIGINT,
                        COALESCE(SUM(size), 0)::BIGINT
                 FROM documents WHERE kb_id = $1 GROUP BY status",
                &[&kb_id],
            )? {
                let status: String = r.get(0);
                let n = u(&r, 1);
                match DocumentStatus::parse(&status) {
                    Some(DocumentStatus::Queued) => stats.queued = n,
                    Some(DocumentStatus::Processing) => stats.processing = n,
                    Some(DocumentStatus::Ready) => {
                        stats.ready = n;
                        stats.chunks = u(&r, 2);
                        stats.bytes = u(&r, 3);
                    }
                    Some(DocumentStatus::Failed) => stats.failed = n,
                    None => {}
                }
            }
            stats.stale = u(
                &c.query_one(
                    &format!(
                        "SELECT COUNT(*) FROM documents d JOIN kbs k ON k.id = d.kb_id
                         WHERE d.kb_id = $1 AND {STALE}"
                    ),
                    &[&kb_id],
                )?,
                0,
            );
            Ok(stats)
        })
    }
}

impl DocumentStore for PgStore {
    fn insert_document(&self, doc: &NewDocument) -> Result<Inserted> {
        let metadata = serde_json::to_string(&doc.metadata).map_err(json_err)?;
        self.write(|tx| {
            let existing = tx.query_opt(
                &format!(
                    "SELECT {DOC_COLS} FROM documents
                     WHERE kb_id = $1 AND sha256 = $2 AND status <> 'failed'
                     ORDER BY created_at DESC LIMIT 1"
                ),
                &[&doc.kb_id, &doc.sha256],
            )?;
            if let Some(existing) = existing {
                return Ok(Inserted {
                    document: doc_row(&existing)?,
                    created: false,
                });
            }
            // Older versions under the same name: a ready one is replaced when the new one is
            // published; unfinished or failed ones are superseded now.
            let same_name = tx.query(
                "SELECT id, status FROM documents WHERE kb_id = $1 AND name = $2",
                &[&doc.kb_id, &doc.name],
            )?;
            let mut replaces: Option<String> = None;
            for r in same_name {
                let (id, status): (String, String) = (r.get(0), r.get(1));
                if status == "ready" {
                    replaces = Some(id);
                } else {
                    // The bytes of a superseded version may still be shared; keep them.
                    tx.execute("DELETE FROM documents WHERE id = $1", &[&id])?;
                }
            }
            let id = new_id();
            let now = Utc::now();
            tx.execute(
                "INSERT INTO documents (id, kb_id, job_id, name, media_type, size, sha256, status,
                                        metadata, replaces, created_at, updated_at, password)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8, $9, $10, $10, $11)",
                &[
                    &id,
                    &doc.kb_id,
                    &doc.job_id,
                    &doc.name,
                    &doc.media_type,
                    &(doc.size as i64),
                    &doc.sha256,
                    &metadata,
                    &replaces,
                    &now,
                    &doc.password,
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
            let stale = if query.stale { STALE } else { "TRUE" };
            let filter = format!(
                "FROM documents d JOIN kbs k ON k.id = d.kb_id
                 WHERE d.kb_id = $1 AND ($2::TEXT IS NULL OR d.status = $2) AND {stale}"
            );
            let total = u(
                &c.query_one(&format!("SELECT COUNT(*) {filter}"), &[&kb_id, &status])?,
                0,
            );
            let cols = DOC_COLS
                .split(", ")
                .map(|col| format!("d.{}", col.trim()))
                .collect::<Vec<_>>()
                .join(", ");
            let items = docs(c.query(
                &format!(
                    "SELECT {cols} {filter} ORDER BY d.created_at DESC, d.id DESC
                     LIMIT $3 OFFSET $4"
                ),
                &[&kb_id, &status, &count(query.limit), &count(query.offset)],
            )?)?;
            Ok(Page { items, total })
        })
    }

    fn unfinished_documents(&self) -> Result<Vec<Document>> {
        self.read(|c| {
            docs(c.query(
                &format!(
                    "SELECT {DOC_COLS} FROM documents WHERE status IN ('queued', 'processing')
                     ORDER BY created_at, id"
                ),
                &[],
            )?)
        })
    }

    fn count_unfinished(&self) -> Result<u64> {
        self.read(|c| {
            Ok(u(
                &c.query_one(
                    "SELECT COUNT(*) FROM documents WHERE status IN ('queued', 'processing')",
                    &[],
                )?,
                0,
            ))
        })
    }

    fn mark_processing(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE documents SET status = 'processing', updated_at = $2
                 WHERE id = $1 AND status IN ('queued', 'processing')",
                &[&id, &Utc::now()],
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
                        updated_at = $2
                 WHERE id = $1 AND status = 'failed'",
                &[&id, &Utc::now()],
            )?;
            Ok(())
        })
    }

    fn mark_failed(&self, id: &str, code: &str, message: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE documents SET status = 'failed', error_code = $2, error = $3,
                        updated_at = $4
                 WHERE id = $1 AND status IN ('queued', 'processing')",
                &[&id, &code, &message, &Utc::now()],
            )?;
            Ok(())
        })
    }

    fn publish(&self, p: &Publish<'_>) -> Result<Published> {
        let warnings = serde_json::to_string(p.warnings).map_err(json_err)?;
        let extraction = serde_json::to_string(p.extraction).map_err(json_err)?;
        self.write(|tx| {
            let row = tx.query_opt(
                "SELECT d.kb_id, d.replaces, d.status, d.job_id, k.generation
                 FROM documents d JOIN kbs k ON k.id = d.kb_id WHERE d.id = $1",
                &[&p.document_id],
            )?;
            let Some(row) = row.filter(|r| r.get::<_, &str>(2) != "failed") else {
                // Deleted or superseded while it was being processed.
                return Err(StoreError::NotFound {
                    kind: "document",
                    id: p.document_id.to_owned(),
                });
            };
            let (kb_id, replaces, job_id): (String, Option<String>, String) =
                (row.get(0), row.get(1), row.get(3));
            if row.get::<_, &str>(2) == "ready" {
                return Err(StoreError::Conflict {
                    kind: "published document",
                    name: p.document_id.to_owned(),
                });
            }
            let chunk_ids = insert_chunks(tx, p.document_id, row.get(4), &p.chunks)?;
            tx.execute(
                "UPDATE documents SET status = 'ready', chunk_count = $2, pages = $3,
                        warnings = $4, error_code = NULL, error = NULL, replaces = NULL,
                        updated_at = $5, embedding_model = $6, chunk_max_tokens = $7,
                        chunk_overlap_tokens = $8, extraction = $9
                 WHERE id = $1",
                &[
                    &p.document_id,
                    &(chunk_ids.len() as i64),
                    &p.pages.map(i64::from),
                    &warnings,
                    &Utc::now(),
                    &p.embedding_model,
                    &i64::from(p.chunking.max_tokens),
                    &i64::from(p.chunking.overlap_tokens),
                    &extraction,
                ],
            )?;
            tx.execute(
                "UPDATE jobs SET chunks_embedded = chunks_embedded + $2 WHERE id = $1",
                &[&job_id, &(chunk_ids.len() as i64)],
            )?;
            let mut replaced = None;
            let mut orphaned = Vec::new();
            if let Some(old) = replaces {
                let old_exists: bool = tx
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM documents WHERE id = $1)",
                        &[&old],
                    )?
                    .get(0);
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
            c.query(
                "SELECT d.name, c.heading_path, COUNT(*) FROM chunks c
                   JOIN documents d ON d.id = c.document_id
                   JOIN kbs k ON k.id = d.kb_id
                 WHERE d.kb_id = $1 AND d.status = 'ready' AND c.generation = k.generation
                   AND c.heading_path <> '[]'
                   AND d.id IN (SELECT id FROM documents WHERE kb_id = $1 AND status = 'ready'
                                ORDER BY updated_at DESC LIMIT 50)
                 GROUP BY d.id, d.name, c.heading_path ORDER BY MIN(c.id) LIMIT $2",
                &[&kb_id, &count(limit)],
            )?
            .iter()
            .map(|r| {
                Ok(Heading {
                    document_name: r.get(0),
                    path: serde_json::from_str(r.get::<_, &str>(1)).map_err(json_err)?,
                    chunks: r.get::<_, i64>(2) as u64,
                })
            })
            .collect()
        })
    }

    fn list_chunks(&self, document_id: &str, offset: u64, limit: u64) -> Result<Vec<ChunkRecord>> {
        self.read(|c| {
            c.query(
                &format!(
                    "{CHUNK_SELECT} WHERE c.document_id = $1
                       AND c.generation = (SELECT k.generation FROM kbs k WHERE k.id = d.kb_id)
                     ORDER BY c.ordinal LIMIT $2 OFFSET $3"
                ),
                &[&document_id, &count(limit), &count(offset)],
            )?
            .iter()
            .map(chunk_row)
            .collect()
        })
    }

    fn chunks_by_id(&self, ids: &[u64]) -> Result<Vec<ChunkRecord>> {
        let wanted: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        self.read(|c| {
            // One round trip; rows come back in the order asked for.
            c.query(
                &format!(
                    "{CHUNK_SELECT} JOIN unnest($1::BIGINT[]) WITH ORDINALITY AS w(id, i)
                       ON w.id = c.id
                     ORDER BY w.i"
                ),
                &[&wanted],
            )?
            .iter()
            .map(chunk_row)
            .collect()
        })
    }

    fn for_each_vector(
        &self,
        kb_id: &str,
        generation: Option<u64>,
        f: &mut dyn FnMut(StoredPoint) -> Result<()>,
    ) -> Result<u64> {
        let mut conn = self.conn()?;
        // One snapshot: the rows and the sequence agree.
        let mut tx = conn
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let row = tx
            .query_opt(
                "SELECT index_seq, generation FROM kbs WHERE id = $1",
                &[&kb_id],
            )?
            .ok_or_else(|| StoreError::NotFound {
                kind: "knowledge base",
                id: kb_id.to_owned(),
            })?;
        let seq = u(&row, 0);
        let generation = generation.map_or_else(|| row.get::<_, i64>(1), |g| g as i64);
        // Streamed through a portal in pages, so a large KB is never held in memory twice.
        let portal = tx.bind(
            "SELECT c.id, c.document_id,
                    CASE WHEN c.context = '' THEN c.text ELSE c.context || E'\\n' || c.text END,
                    c.vector, d.metadata
             FROM chunks c JOIN documents d ON d.id = c.document_id
             WHERE d.kb_id = $1 AND d.status = 'ready' AND c.generation = $2
             ORDER BY c.id",
            &[&kb_id, &generation],
        )?;
        let mut last_doc = String::new();
        let mut last_meta = Default::default();
        loop {
            let rows = tx.query_portal(&portal, 4096)?;
            if rows.is_empty() {
                break;
            }
            for r in rows {
                let document_id: String = r.get(1);
                if document_id != last_doc {
                    let raw: &str = r.get(4);
                    let map: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_str(raw).map_err(json_err)?;
                    last_meta = flatten_metadata(&map);
                    last_doc = document_id.clone();
                }
                f(StoredPoint {
                    chunk_id: u(&r, 0),
                    document_id,
                    text: r.get(2),
                    vector: crate::util::f32s_from_le(r.get(3)),
                    metadata: last_meta.clone(),
                })?;
            }
        }
        tx.commit()?;
        Ok(seq)
    }
}

fn chunk_row(r: &Row) -> Result<ChunkRecord> {
    let headings: &str = r.get(10);
    Ok(ChunkRecord {
        id: u(r, 0),
        document_id: r.get(1),
        document_name: r.get(2),
        ordinal: u(r, 3) as u32,
        start: u(r, 4),
        end: u(r, 5),
        text: r.get(6),
        tokens: u(r, 7) as u32,
        page_start: u32_opt(r, 8),
        page_end: u32_opt(r, 9),
        heading_path: serde_json::from_str(headings).map_err(json_err)?,
        hash: r.get(11),
        context: r.get(12),
        ocr_confidence: r.get(13),
    })
}

impl JobStore for PgStore {
    fn create_job(&self, id: &str, tenant_id: &str, kb_id: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO jobs (id, tenant_id, kb_id, created_at) VALUES ($1, $2, $3, $4)",
                &[&id, &tenant_id, &kb_id, &Utc::now()],
            )?;
            Ok(())
        })
    }

    fn job(&self, tenant_id: &str, id: &str) -> Result<Job> {
        self.read(|c| {
            let row = c
                .query_opt(
                    "SELECT kb_id, chunks_embedded, created_at FROM jobs
                     WHERE id = $1 AND tenant_id = $2",
                    &[&id, &tenant_id],
                )?
                .ok_or_else(|| StoreError::NotFound {
                    kind: "job",
                    id: id.to_owned(),
                })?;
            let mut job = Job {
                id: id.to_owned(),
                kb_id: row.get(0),
                total: 0,
                queued: 0,
                processing: 0,
                ready: 0,
                failed: 0,
                chunks_embedded: u(&row, 1),
                errors: Vec::new(),
                created_at: row.get(2),
            };
            for r in c.query(
                "SELECT id, name, status, error_code, error FROM documents WHERE job_id = $1
                 ORDER BY created_at",
                &[&id],
            )? {
                job.total += 1;
                let status: &str = r.get(2);
                match DocumentStatus::parse(status) {
                    Some(DocumentStatus::Queued) => job.queued += 1,
                    Some(DocumentStatus::Processing) => job.processing += 1,
                    Some(DocumentStatus::Ready) => job.ready += 1,
                    Some(DocumentStatus::Failed) => {
                        job.failed += 1;
                        job.errors.push(JobError {
                            document_id: r.get(0),
                            name: r.get(1),
                            code: r.get::<_, Option<String>>(3).unwrap_or_default(),
                            message: r.get::<_, Option<String>>(4).unwrap_or_default(),
                        });
                    }
                    None => {}
                }
            }
            Ok(job)
        })
    }
}

impl GenerationStore for PgStore {
    fn begin_generation(&self, kb_id: &str) -> Result<u64> {
        self.write(|tx| {
            let serving: i64 = tx
                .query_one("SELECT generation FROM kbs WHERE id = $1", &[&kb_id])?
                .get(0);
            tx.execute(
                "DELETE FROM chunks WHERE generation > $2
                   AND document_id IN (SELECT id FROM documents WHERE kb_id = $1)",
                &[&kb_id, &serving],
            )?;
            Ok(serving as u64 + 1)
        })
    }

    fn documents_missing_generation(&self, kb_id: &str, generation: u64) -> Result<Vec<Document>> {
        self.read(|c| {
            docs(c.query(
                &format!(
                    "SELECT {DOC_COLS} FROM documents d WHERE d.kb_id = $1 AND d.status = 'ready'
                       AND NOT EXISTS (SELECT 1 FROM chunks c
                                       WHERE c.document_id = d.id AND c.generation = $2)
                     ORDER BY d.created_at, d.id"
                ),
                &[&kb_id, &(generation as i64)],
            )?)
        })
    }

    fn stage_chunks(
        &self,
        document_id: &str,
        generation: u64,
        chunks: &[ChunkRow<'_>],
    ) -> Result<Option<Vec<u64>>> {
        self.write(|tx| {
            let live: bool = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM documents WHERE id = $1 AND status = 'ready')",
                    &[&document_id],
                )?
                .get(0);
            if !live {
                return Ok(None);
            }
            let existing = ids(tx.query(
                "SELECT id FROM chunks WHERE document_id = $1 AND generation = $2
                 ORDER BY ordinal",
                &[&document_id, &(generation as i64)],
            )?);
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
            Ok(ids(c.query(
                "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id
                 WHERE d.kb_id = $1 AND d.status = 'ready' AND c.generation = $2 ORDER BY c.id",
                &[&kb_id, &(generation as i64)],
            )?))
        })
    }

    fn switch_generation(&self, kb_id: &str, switch: &GenerationSwitch) -> Result<Option<u64>> {
        self.write(|tx| {
            let serving: i64 = tx
                .query_one(
                    "SELECT generation FROM kbs WHERE id = $1 FOR UPDATE",
                    &[&kb_id],
                )?
                .get(0);
            if serving as u64 >= switch.generation {
                return Ok(None);
            }
            let generation = switch.generation as i64;
            tx.execute(
                "UPDATE kbs SET generation = $2, embedding_model = $3, model_source = $4,
                        dimension = $5, chunk_max_tokens = $6, chunk_overlap_tokens = $7
                 WHERE id = $1",
                &[
                    &kb_id,
                    &generation,
                    &switch.embedding_model,
                    &switch.model_source,
                    &i64::from(switch.dimension),
                    &i64::from(switch.chunking.max_tokens),
                    &i64::from(switch.chunking.overlap_tokens),
                ],
            )?;
            tx.execute(
                "DELETE FROM chunks WHERE generation <> $2
                   AND document_id IN (SELECT id FROM documents WHERE kb_id = $1)",
                &[&kb_id, &generation],
            )?;
            tx.execute(
                "UPDATE documents SET embedding_model = $2, chunk_max_tokens = $3,
                        chunk_overlap_tokens = $4,
                        chunk_count = (SELECT COUNT(*) FROM chunks c
                                       WHERE c.document_id = documents.id)
                 WHERE kb_id = $1 AND status = 'ready'",
                &[
                    &kb_id,
                    &switch.embedding_model,
                    &i64::from(switch.chunking.max_tokens),
                    &i64::from(switch.chunking.overlap_tokens),
                ],
            )?;
            Ok(Some(bump_seq(tx, kb_id, ChangeKind::Switch, None, &[])?))
        })
    }

    fn drop_generation(&self, kb_id: &str, generation: u64) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM chunks WHERE generation = $2
                   AND generation <> (SELECT generation FROM kbs WHERE id = $1)
                   AND document_id IN (SELECT id FROM documents WHERE kb_id = $1)",
                &[&kb_id, &(generation as i64)],
            )?;
            Ok(())
        })
    }
}
