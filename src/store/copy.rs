//! Copying a whole SQLite deployment into PostgreSQL (`groundwork migrate`): every table row
//! for row (ids kept, so search indexes built from either store agree), the uploaded bytes,
//! then a verification that both sides hold the same rows — counted and checksummed per table.
//!
//! It owns the copy and its proof; it must never change the source, and never write a row
//! into the target that is already there (a re-run copies what is missing and verifies).
//! Both schemas list the same columns under the same names; a PostgreSQL column the source
//! lacks is refused rather than guessed.

use chrono::{DateTime, Utc};
use postgres::types::ToSql;
use rusqlite::types::ValueRef;
use sha2::{Digest, Sha256};

use super::{BlobStore, PgStore, Result, SqliteStore, StoreError};

/// Tables in an order where every row's references are copied before it.
const TABLES: &[&str] = &[
    "tenants",
    "api_keys",
    "kbs",
    "jobs",
    "documents",
    "chunks",
    "workflows",
    "workflow_steps",
    "workflow_events",
    "sources",
    "gateway_calls",
    "gateway_cache",
    "agents",
    "agent_conversations",
    "agent_messages",
    "agent_tasks",
    "agent_schedules",
    "agent_events",
];

/// Rows sent per statement.
const BATCH: usize = 500;

/// What the copy is doing, for a progress display.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Rows to copy over all tables (known before the first is copied).
    Total(u64),
    /// Now copying this table.
    Table(&'static str),
    /// This many more rows were read from the source.
    Rows(u64),
    /// Now copying uploaded bytes (this many documents' worth).
    Blobs(u64),
}

/// One table after the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReport {
    /// The table (or `blobs` for uploaded bytes).
    pub table: String,
    /// Rows in the source.
    pub source_rows: u64,
    /// Rows in the target after the copy.
    pub target_rows: u64,
    /// Rows this run inserted (0 on a re-run).
    pub inserted: u64,
    /// The source's checksum; the target's equals it (or the copy failed).
    pub checksum: String,
}

/// A column's type on the PostgreSQL side, which decides how a SQLite value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
    Time,
    Bool,
    Double,
    Real,
    Bytes,
}

impl Kind {
    fn of(pg_type: &str) -> Result<Self> {
        Ok(match pg_type {
            "bigint" | "integer" | "smallint" => Kind::Int,
            "text" | "character varying" => Kind::Text,
            "timestamp with time zone" => Kind::Time,
            "boolean" => Kind::Bool,
            "double precision" => Kind::Double,
            "real" => Kind::Real,
            "bytea" => Kind::Bytes,
            other => {
                return Err(StoreError::Migration(format!(
                    "no copy rule for the PostgreSQL type `{other}`"
                )))
            }
        })
    }

    /// The array type a batch of this column is sent as.
    fn array(self) -> &'static str {
        match self {
            Kind::Int => "bigint[]",
            Kind::Text => "text[]",
            Kind::Time => "timestamptz[]",
            Kind::Bool => "boolean[]",
            Kind::Double => "float8[]",
            Kind::Real => "float4[]",
            Kind::Bytes => "bytea[]",
        }
    }
}

/// One value, as both sides hold it.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Null,
    Int(i64),
    Text(String),
    /// Microseconds since the epoch (PostgreSQL's precision; the driver truncates to it).
    Time(i64),
    Bool(bool),
    Double(f64),
    Real(f32),
    Bytes(Vec<u8>),
}

impl Value {
    /// A canonical encoding, so that equal values hash equally whichever side read them.
    fn feed(&self, h: &mut Sha256) {
        match self {
            Value::Null => h.update([0]),
            Value::Int(v) | Value::Time(v) => {
                h.update([1]);
                h.update(v.to_le_bytes());
            }
            Value::Text(s) => {
                h.update([2]);
                h.update((s.len() as u64).to_le_bytes());
                h.update(s.as_bytes());
            }
            Value::Bool(b) => h.update([3, u8::from(*b)]),
            Value::Double(v) => {
                h.update([4]);
                h.update(v.to_bits().to_le_bytes());
            }
            Value::Real(v) => {
                h.update([5]);
                h.update(v.to_bits().to_le_bytes());
            }
            Value::Bytes(b) => {
                h.update([6]);
                h.update((b.len() as u64).to_le_bytes());
                h.update(b);
            }
        }
    }
}

/// An order-independent checksum of a table: the sum of its rows' hashes (so neither side
/// needs to sort, and text collations cannot disagree about an order).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Checksum {
    sum: u128,
    rows: u64,
}

impl Checksum {
    fn add(&mut self, row: &[Value]) {
        let mut h = Sha256::new();
        for v in row {
            v.feed(&mut h);
        }
        let digest = h.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        self.sum = self.sum.wrapping_add(u128::from_le_bytes(first));
        self.rows += 1;
    }

    fn hex(&self) -> String {
        format!("{:032x}", self.sum)
    }
}

struct Column {
    name: String,
    kind: Kind,
    identity: bool,
}

fn migration_err(table: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Migration(format!("{table}: {e}"))
}

/// Copies every record of `source` (with the bytes in `source_blobs`) into `target`, then
/// verifies every table. Safe to run again: rows already present are left alone.
pub fn sqlite_to_postgres(
    source: &SqliteStore,
    source_blobs: &dyn BlobStore,
    target: &PgStore,
    target_blobs: &dyn BlobStore,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<TableReport>> {
    target.with_client(|pg| {
        source.with_reader(|lite| {
            // One read transaction: every table as of one moment.
            lite.execute_batch("BEGIN")?;
            let out = copy_tables(lite, pg, progress);
            let _ = lite.execute_batch("COMMIT");
            let mut reports = out?;
            reports.push(copy_blobs(lite, source_blobs, target_blobs, progress)?);
            Ok(reports)
        })
    })
}

fn copy_tables(
    lite: &rusqlite::Connection,
    pg: &mut postgres::Client,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<TableReport>> {
    let mut total = 0;
    for table in TABLES {
        total += lite.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
            r.get::<_, i64>(0)
        })? as u64;
    }
    progress(Progress::Total(total));
    let mut reports = Vec::new();
    for table in TABLES {
        progress(Progress::Table(table));
        reports.push(copy_table(lite, pg, table, progress)?);
    }
    Ok(reports)
}

fn columns(
    lite: &rusqlite::Connection,
    pg: &mut postgres::Client,
    table: &str,
) -> Result<Vec<Column>> {
    let rows = pg.query(
        "SELECT column_name, data_type, is_identity = 'YES' FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        &[&table],
    )?;
    let mut stmt = lite.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
    let in_source: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::new();
    for r in rows {
        let name: String = r.get(0);
        if !in_source.contains(&name) {
            return Err(migration_err(
                table,
                format!("column `{name}` is missing in the source; upgrade it first (run this version's server on it once)"),
            ));
        }
        out.push(Column {
            kind: Kind::of(r.get::<_, &str>(1))?,
            identity: r.get(2),
            name,
        });
    }
    if out.is_empty() {
        return Err(migration_err(table, "no such table in the target"));
    }
    Ok(out)
}

fn read_value(table: &str, col: &Column, v: ValueRef<'_>) -> Result<Value> {
    let bad = |what: &str| {
        migration_err(
            table,
            format!("column `{}` holds {what}, not {:?}", col.name, col.kind),
        )
    };
    Ok(match (col.kind, v) {
        (_, ValueRef::Null) => Value::Null,
        (Kind::Int, ValueRef::Integer(i)) => Value::Int(i),
        (Kind::Bool, ValueRef::Integer(i)) => Value::Bool(i != 0),
        (Kind::Double, ValueRef::Real(f)) => Value::Double(f),
        (Kind::Double, ValueRef::Integer(i)) => Value::Double(i as f64),
        (Kind::Real, ValueRef::Real(f)) => Value::Real(f as f32),
        (Kind::Real, ValueRef::Integer(i)) => Value::Real(i as f32),
        (Kind::Text, ValueRef::Text(t)) => Value::Text(
            std::str::from_utf8(t)
                .map_err(|_| bad("text that is not UTF-8"))?
                .to_owned(),
        ),
        (Kind::Bytes, ValueRef::Blob(b)) => Value::Bytes(b.to_vec()),
        (Kind::Time, ValueRef::Text(_)) => {
            let t: DateTime<Utc> = rusqlite::types::FromSql::column_result(v)
                .map_err(|e| bad(&format!("an unreadable time ({e})")))?;
            Value::Time(t.timestamp_micros())
        }
        (_, ValueRef::Integer(_)) => return Err(bad("an integer")),
        (_, ValueRef::Real(_)) => return Err(bad("a real")),
        (_, ValueRef::Text(_)) => return Err(bad("text")),
        (_, ValueRef::Blob(_)) => return Err(bad("a blob")),
    })
}

fn copy_table(
    lite: &rusqlite::Connection,
    pg: &mut postgres::Client,
    table: &'static str,
    progress: &mut dyn FnMut(Progress),
) -> Result<TableReport> {
    let cols = columns(lite, pg, table)?;
    let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
    let list = names.join(", ");
    let params: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("${}::{}", i + 1, c.kind.array()))
        .collect();
    let overriding = if cols.iter().any(|c| c.identity) {
        " OVERRIDING SYSTEM VALUE"
    } else {
        ""
    };
    let insert = pg.prepare(&format!(
        "INSERT INTO {table} ({list}){overriding} SELECT * FROM unnest({}) ON CONFLICT DO NOTHING",
        params.join(", ")
    ))?;

    let mut source = Checksum::default();
    let mut inserted = 0u64;
    let mut batch: Vec<Vec<Value>> = Vec::with_capacity(BATCH);
    let mut stmt = lite.prepare(&format!("SELECT {list} FROM {table}"))?;
    let mut rows = stmt.query([])?;
    loop {
        let row = rows.next()?;
        if let Some(row) = row {
            let mut values = Vec::with_capacity(cols.len());
            for (i, col) in cols.iter().enumerate() {
                values.push(read_value(table, col, row.get_ref(i)?)?);
            }
            source.add(&values);
            batch.push(values);
        }
        if batch.len() == BATCH || (row.is_none() && !batch.is_empty()) {
            inserted += send(pg, &insert, &cols, &batch)?;
            progress(Progress::Rows(batch.len() as u64));
            batch.clear();
        }
        if row.is_none() {
            break;
        }
    }
    drop(rows);
    if let Some(id) = cols.iter().find(|c| c.identity) {
        advance_identity(lite, pg, table, &id.name)?;
    }
    let copied = target_checksum(pg, table, &cols)?;
    if copied != source {
        return Err(migration_err(
            table,
            format!(
                "the target differs after the copy ({} rows there, {} here; checksums {} and {}): \
                 it holds records of another deployment — migrate into an empty database",
                copied.rows,
                source.rows,
                copied.hex(),
                source.hex()
            ),
        ));
    }
    Ok(TableReport {
        table: table.to_owned(),
        source_rows: source.rows,
        target_rows: copied.rows,
        inserted,
        checksum: source.hex(),
    })
}

/// Inserts a batch as one statement (a column per array); returns the rows inserted.
fn send(
    pg: &mut postgres::Client,
    insert: &postgres::Statement,
    cols: &[Column],
    batch: &[Vec<Value>],
) -> Result<u64> {
    let arrays: Vec<Box<dyn ToSql + Sync>> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| column_array(c.kind, batch.iter().map(|r| &r[i])))
        .collect();
    let refs: Vec<&(dyn ToSql + Sync)> = arrays.iter().map(|a| a.as_ref()).collect();
    Ok(pg.execute(insert, &refs)?)
}

fn column_array<'a>(kind: Kind, values: impl Iterator<Item = &'a Value>) -> Box<dyn ToSql + Sync> {
    fn pick<'v, T>(
        values: impl Iterator<Item = &'v Value>,
        f: impl Fn(&Value) -> Option<T>,
    ) -> Vec<Option<T>> {
        values.map(f).collect()
    }
    match kind {
        Kind::Int => Box::new(pick(values, |v| match v {
            Value::Int(i) => Some(*i),
            _ => None,
        })),
        Kind::Text => Box::new(pick(values, |v| match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        })),
        Kind::Time => Box::new(pick(values, |v| match v {
            Value::Time(us) => DateTime::<Utc>::from_timestamp_micros(*us),
            _ => None,
        })),
        Kind::Bool => Box::new(pick(values, |v| match v {
            Value::Bool(b) => Some(*b),
            _ => None,
        })),
        Kind::Double => Box::new(pick(values, |v| match v {
            Value::Double(f) => Some(*f),
            _ => None,
        })),
        Kind::Real => Box::new(pick(values, |v| match v {
            Value::Real(f) => Some(*f),
            _ => None,
        })),
        Kind::Bytes => Box::new(pick(values, |v| match v {
            Value::Bytes(b) => Some(b.clone()),
            _ => None,
        })),
    }
}

/// Moves an identity past every id the source ever gave (SQLite's AUTOINCREMENT counter
/// included: chunk ids are index point ids and are never reused).
fn advance_identity(
    lite: &rusqlite::Connection,
    pg: &mut postgres::Client,
    table: &str,
    column: &str,
) -> Result<()> {
    let max: i64 = lite.query_row(
        &format!("SELECT coalesce(max({column}), 0) FROM {table}"),
        [],
        |r| r.get(0),
    )?;
    let counter: i64 = lite
        .query_row(
            "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = ?1",
            [table],
            |r| r.get(0),
        )
        .unwrap_or(0);
    let last = max.max(counter);
    if last > 0 {
        pg.query_one(
            &format!(
                "SELECT setval(pg_get_serial_sequence($1, $2), \
                 greatest($3::bigint, (SELECT coalesce(max({column}), 0) FROM {table})))"
            ),
            &[&table, &column, &last],
        )?;
    }
    Ok(())
}

/// The target table's rows read back, typed as the copy wrote them, and checksummed.
fn target_checksum(pg: &mut postgres::Client, table: &str, cols: &[Column]) -> Result<Checksum> {
    let list = cols
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let mut sum = Checksum::default();
    let mut tx = pg.build_transaction().read_only(true).start()?;
    let portal = tx.bind(&format!("SELECT {list} FROM {table}"), &[])?;
    loop {
        let rows = tx.query_portal(&portal, 2_048)?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let values: Vec<Value> = cols
                .iter()
                .enumerate()
                .map(|(i, c)| pg_value(row, i, c.kind))
                .collect();
            sum.add(&values);
        }
    }
    tx.commit()?;
    Ok(sum)
}

fn pg_value(row: &postgres::Row, i: usize, kind: Kind) -> Value {
    let v = match kind {
        Kind::Int => row.get::<_, Option<i64>>(i).map(Value::Int),
        Kind::Text => row.get::<_, Option<String>>(i).map(Value::Text),
        Kind::Time => row
            .get::<_, Option<DateTime<Utc>>>(i)
            .map(|t| Value::Time(t.timestamp_micros())),
        Kind::Bool => row.get::<_, Option<bool>>(i).map(Value::Bool),
        Kind::Double => row.get::<_, Option<f64>>(i).map(Value::Double),
        Kind::Real => row.get::<_, Option<f32>>(i).map(Value::Real),
        Kind::Bytes => row.get::<_, Option<Vec<u8>>>(i).map(Value::Bytes),
    };
    v.unwrap_or(Value::Null)
}

/// Copies the bytes every document refers to, each checked against its hash on both sides.
fn copy_blobs(
    lite: &rusqlite::Connection,
    source: &dyn BlobStore,
    target: &dyn BlobStore,
    progress: &mut dyn FnMut(Progress),
) -> Result<TableReport> {
    let mut stmt = lite.prepare("SELECT DISTINCT sha256 FROM documents ORDER BY sha256")?;
    let shas: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    progress(Progress::Blobs(shas.len() as u64));
    let io = |sha: &str, e: std::io::Error| migration_err("blobs", format!("{sha}: {e}"));
    let (mut present, mut verified, mut inserted) = (0u64, 0u64, 0u64);
    let mut sum = Checksum::default();
    for sha in &shas {
        if !source.contains(sha) {
            // A failed upload whose bytes were dropped, or bytes deleted with a replaced
            // version: nothing to copy, and nothing in the target refers to them either.
            progress(Progress::Rows(1));
            continue;
        }
        present += 1;
        sum.add(&[Value::Text(sha.clone())]);
        if !target.contains(sha) {
            let bytes = source.get(sha).map_err(|e| io(sha, e))?;
            if crate::util::sha256_hex(&bytes) != *sha {
                return Err(migration_err(
                    "blobs",
                    format!("{sha}: the stored bytes do not match their hash"),
                ));
            }
            target.put(sha, &bytes).map_err(|e| io(sha, e))?;
            inserted += 1;
        }
        let back = target.get(sha).map_err(|e| io(sha, e))?;
        if crate::util::sha256_hex(&back) != *sha {
            return Err(migration_err(
                "blobs",
                format!("{sha}: the copied bytes do not match their hash"),
            ));
        }
        verified += 1;
        progress(Progress::Rows(1));
    }
    Ok(TableReport {
        table: "blobs".into(),
        source_rows: present,
        target_rows: verified,
        inserted,
        checksum: sum.hex(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_ignore_row_order_and_see_every_value() {
        let rows = [
            vec![Value::Int(1), Value::Text("a".into()), Value::Null],
            vec![Value::Int(2), Value::Text("b".into()), Value::Real(0.5)],
            vec![Value::Int(3), Value::Bytes(vec![0, 1]), Value::Time(7)],
        ];
        let mut forward = Checksum::default();
        rows.iter().for_each(|r| forward.add(r));
        let mut backward = Checksum::default();
        rows.iter().rev().for_each(|r| backward.add(r));
        assert_eq!(forward, backward);
        // A changed value, a NULL for an empty text, a moved boundary between values: seen.
        for changed in [
            vec![Value::Int(3), Value::Bytes(vec![0, 2]), Value::Time(7)],
            vec![Value::Int(1), Value::Text(String::new()), Value::Null],
            vec![Value::Int(1), Value::Null, Value::Null],
        ] {
            let mut other = Checksum::default();
            rows[..2].iter().for_each(|r| other.add(r));
            other.add(&changed);
            assert_ne!(other, forward, "{changed:?}");
        }
        let mut split = Checksum::default();
        split.add(&[Value::Text("ab".into()), Value::Text("c".into())]);
        let mut joined = Checksum::default();
        joined.add(&[Value::Text("a".into()), Value::Text("bc".into())]);
        assert_ne!(split, joined);
    }

    #[test]
    fn sqlite_times_become_microseconds_as_the_driver_sends_them() {
        let col = Column {
            name: "created_at".into(),
            kind: Kind::Time,
            identity: false,
        };
        let v = read_value(
            "t",
            &col,
            ValueRef::Text(b"2026-11-30 12:34:56.123456789+00:00"),
        )
        .expect("time");
        let t = DateTime::parse_from_rfc3339("2026-11-30T12:34:56.123456Z").expect("t");
        assert_eq!(v, Value::Time(t.timestamp_micros()));
        assert!(read_value("t", &col, ValueRef::Integer(3)).is_err());
    }
}
