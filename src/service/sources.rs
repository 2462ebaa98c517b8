//! Folder sources: a server-side directory registered with a knowledge base and synced on a
//! schedule (cron expression or `every <duration>`) and on demand. A sync is a durable
//! workflow: `scan` (paths, sizes, content hashes) → `apply` (new and changed files are
//! uploaded as one ingest run; documents whose file disappeared are deleted). Schedules live
//! in the store, so they survive restarts; a due sync is started with an idempotency key made
//! of its due time, so a restart never starts the same slot twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Weak;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::ingest::{step_error, upgrade};
use super::{Core, Result, ServiceError, Upload};
use crate::store::{DocumentStatus, Source, StoreError};
use crate::workflow::schedule::Schedule;
use crate::workflow::{Ctx, Handler, Interrupt, StepError, StepOptions};

/// Input of a `sync` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncInput {
    /// Knowledge base.
    pub kb_id: String,
    /// The source.
    pub source_id: String,
}

/// One file seen by `scan`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Seen {
    /// Path relative to the source folder, `/`-separated.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Content hash.
    pub sha256: String,
}

/// Output of `apply`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Applied {
    /// New files uploaded.
    pub added: usize,
    /// Changed files uploaded (each replaces its previous document once ready).
    pub changed: usize,
    /// Documents deleted because their file is gone.
    pub removed: usize,
    /// Files unchanged.
    pub unchanged: usize,
    /// Files left out (too large, unsupported type, unreadable), with the reason.
    pub skipped: BTreeMap<String, String>,
    /// The ingest run of the uploaded files.
    pub ingest_workflow: Option<String>,
}

/// Files of a folder, recursively, hidden entries skipped, sorted by path.
pub fn list_files(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'))
    {
        let entry = entry.map_err(std::io::Error::other)?;
        if entry.file_type().is_file() {
            files.push(entry.into_path());
        }
    }
    files.sort();
    Ok(files)
}

fn relative(root: &Path, file: &Path) -> String {
    file.strip_prefix(root)
        .unwrap_or(file)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// The `sync` workflow type.
pub struct SyncFlow(pub Weak<Core>);

impl Handler for SyncFlow {
    fn kind(&self) -> &'static str {
        super::WorkflowKind::Sync.as_str()
    }

    fn run(&self, ctx: &mut Ctx<'_>) -> std::result::Result<Value, Interrupt> {
        let core = upgrade(&self.0)?;
        let input: SyncInput = ctx.input()?;
        let source = match core.store.get_source(&input.kb_id, &input.source_id) {
            Ok(s) => s,
            Err(StoreError::NotFound { .. }) => return Ok(json!({ "skipped": "source deleted" })),
            Err(e) => return Err(e.into()),
        };
        let root = PathBuf::from(&source.path);
        let max = core.config.ingest.max_file_bytes;
        let seen: Vec<Seen> = ctx.step("scan", &StepOptions::default(), |_| {
            let files = list_files(&root).map_err(|e| {
                StepError::retryable("source_unreadable", format!("{}: {e}", root.display()))
            })?;
            let mut out = Vec::with_capacity(files.len());
            for f in files {
                let size = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
                let sha256 = if size <= max {
                    match std::fs::read(&f) {
                        Ok(bytes) => crate::util::sha256_hex(&bytes),
                        Err(_) => String::new(),
                    }
                } else {
                    String::new()
                };
                out.push(Seen {
                    path: relative(&root, &f),
                    size,
                    sha256,
                });
            }
            Ok(out)
        })?;
        let wf_id = ctx.workflow().id.clone();
        let tenant = ctx.workflow().tenant_id.clone();
        let applied: Applied = ctx.step("apply", &StepOptions::default(), |_| {
            apply(&core, &tenant, &source, &root, &seen, &wf_id).map_err(step_error)
        })?;
        Ok(serde_json::to_value(applied).unwrap_or(Value::Null))
    }
}

fn apply(
    core: &std::sync::Arc<Core>,
    tenant: &str,
    source: &Source,
    root: &Path,
    seen: &[Seen],
    wf_id: &str,
) -> Result<Applied> {
    let service = super::Service::from_core(core.clone());
    let principal = service.system_principal(tenant);
    let mut applied = Applied::default();
    let docs = core.store.source_documents(&source.kb_id, &source.id)?;
    // The newest live (not failed) document per path.
    let mut current: BTreeMap<String, &crate::store::Document> = BTreeMap::new();
    for d in &docs {
        if d.status == DocumentStatus::Failed {
            continue;
        }
        if let Some(path) = d.metadata.get("source_path").and_then(Value::as_str) {
            current.insert(path.to_owned(), d);
        }
    }
    let uploads = changed_files(core, source, root, seen, &current, &mut applied);
    let present: std::collections::HashSet<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    for d in &docs {
        let path = d
            .metadata
            .get("source_path")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !present.contains(path) {
            match service.delete_document(&principal, &source.kb_id, &d.id) {
                Ok(()) => applied.removed += 1,
                Err(ServiceError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    for (i, group) in uploads
        .chunks(core.config.ingest.max_files_per_request.max(1))
        .enumerate()
    {
        // Keyed by run and group: a replayed `apply` finds the uploads it already made.
        let refused = match service.upload_as(
            &principal,
            &source.kb_id,
            group.to_vec(),
            Vec::new(),
            Some(format!("sync:{wf_id}:{i}")),
            true,
        ) {
            Ok(receipt) => {
                applied.ingest_workflow.get_or_insert(receipt.job_id);
                receipt.refused
            }
            Err(ServiceError::AllRefused(refused)) => refused,
            Err(e) => return Err(e),
        };
        for r in refused {
            applied.skipped.insert(r.name, r.detail);
        }
    }
    Ok(applied)
}

/// The files of a scan to upload (new, or with other bytes than the live document of their
/// path), read from the folder; counts them and the unchanged ones, and notes why any other
/// file was skipped.
fn changed_files(
    core: &Core,
    source: &Source,
    root: &Path,
    seen: &[Seen],
    current: &BTreeMap<String, &crate::store::Document>,
    applied: &mut Applied,
) -> Vec<Upload> {
    let mut uploads = Vec::new();
    for file in seen {
        if file.size > core.config.ingest.max_file_bytes {
            applied.skipped.insert(
                file.path.clone(),
                "larger than ingest.max_file_bytes".into(),
            );
            continue;
        }
        match current.get(&file.path) {
            Some(d) if d.sha256 == file.sha256 => {
                applied.unchanged += 1;
                continue;
            }
            Some(_) => applied.changed += 1,
            None => applied.added += 1,
        }
        let bytes = match std::fs::read(root.join(&file.path)) {
            Ok(b) => b,
            Err(e) => {
                applied.skipped.insert(file.path.clone(), e.to_string());
                continue;
            }
        };
        if crate::ingest::detect::detect(&bytes, Some(&file.path)).is_err() || bytes.is_empty() {
            applied
                .skipped
                .insert(file.path.clone(), "not a supported document type".into());
            continue;
        }
        let mut metadata = serde_json::Map::new();
        metadata.insert("source_id".into(), json!(source.id));
        metadata.insert("source_path".into(), json!(file.path));
        uploads.push(Upload {
            password: None,
            name: file.path.clone(),
            bytes: bytes.into(),
            metadata,
            declared: None,
        });
    }
    uploads
}

/// Starts the syncs whose time has come (a clock job of the service).
pub fn start_due(core: &Core) {
    let now = Utc::now();
    let due = match core.store.due_sources(now) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read due sources");
            return;
        }
    };
    for source in due {
        let slot = source.next_sync_at.unwrap_or(now);
        let next = source
            .schedule
            .as_deref()
            .and_then(|s| Schedule::parse(s).ok())
            .and_then(|s| s.next_after(now));
        match start_sync(
            core,
            &source,
            Some(format!("schedule:{}", slot.to_rfc3339())),
        ) {
            Ok(wf) => {
                if let Err(e) = core.store.mark_source_synced(&source.id, &wf, now, next) {
                    tracing::warn!(error = %e, "cannot record a sync");
                }
            }
            Err(e) => {
                tracing::warn!(source = %source.id, error = %e, "cannot start a scheduled sync")
            }
        }
    }
}

/// Starts a sync run of `source`; returns its id.
pub fn start_sync(core: &Core, source: &Source, key: Option<String>) -> Result<String> {
    let (wf, _) = core.engine.create(crate::store::NewWorkflow {
        id: uuid::Uuid::now_v7().to_string(),
        tenant_id: source.tenant_id.clone(),
        kind: super::WorkflowKind::Sync.as_str().into(),
        subject: Some(source.kb_id.clone()),
        idempotency_key: key,
        input: serde_json::to_value(SyncInput {
            kb_id: source.kb_id.clone(),
            source_id: source.id.clone(),
        })
        .unwrap_or(Value::Null),
    })?;
    Ok(wf.id)
}
