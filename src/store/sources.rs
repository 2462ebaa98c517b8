//! Records of folder sources: directories synced into a knowledge base on a schedule.

use chrono::{DateTime, Utc};

use super::{Document, Result};

/// A folder synced into a knowledge base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Stable id.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Knowledge base.
    pub kb_id: String,
    /// Absolute directory on the server.
    pub path: String,
    /// Cron expression or `every <duration>`; `None` syncs on demand only.
    pub schedule: Option<String>,
    /// Next scheduled sync.
    pub next_sync_at: Option<DateTime<Utc>>,
    /// Last sync started.
    pub last_sync_at: Option<DateTime<Utc>>,
    /// Workflow of the last sync.
    pub last_workflow_id: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// Storage of folder sources.
pub trait SourceStore: Send + Sync {
    /// Registers a folder; the same path twice in a KB is a conflict.
    fn create_source(&self, source: &Source) -> Result<Source>;
    /// A knowledge base's sources.
    fn list_sources(&self, kb_id: &str) -> Result<Vec<Source>>;
    /// One source of a knowledge base.
    fn get_source(&self, kb_id: &str, id: &str) -> Result<Source>;
    /// Forgets a source (its documents stay).
    fn delete_source(&self, kb_id: &str, id: &str) -> Result<()>;
    /// Sources whose next sync time has passed.
    fn due_sources(&self, now: DateTime<Utc>) -> Result<Vec<Source>>;
    /// Records a sync start and the next scheduled time.
    fn mark_source_synced(
        &self,
        id: &str,
        workflow_id: &str,
        at: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    ) -> Result<()>;
    /// Documents (any status) that came from a source, by their `source_path` metadata.
    fn source_documents(&self, kb_id: &str, source_id: &str) -> Result<Vec<Document>>;
}
