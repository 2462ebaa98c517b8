//! Uploads and documents: each file admitted or refused on its own, identical bytes found
//! again, the ingest workflow started; listing, reading and deleting documents and their chunks.

use serde::Serialize;

use crate::error::Classify;
use crate::ingest::detect::detect_declared;
use crate::store::{
    ChunkRecord, Document, DocumentQuery, Job, Kb, NewDocument, Page, Scope, Section, StoreError,
};
use crate::util::sha256_hex;

use super::{Principal, Result, Service, ServiceError, WorkflowKind};

/// One file (or text) offered for ingestion.
#[derive(Debug, Clone)]
pub struct Upload {
    /// Client-supplied name (display only).
    pub name: String,
    /// The bytes.
    pub bytes: bytes::Bytes,
    /// Client metadata (a JSON object).
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// The media type the client declared for it, if any (checked against the bytes).
    pub declared: Option<String>,
    /// The password of an encrypted PDF, if the client gave one.
    pub password: Option<String>,
}

/// What happened to one uploaded file.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Position of the file in the request, from 0.
    pub index: usize,
    /// The document (new, or the existing one with identical bytes).
    pub document_id: String,
    /// Its name.
    pub name: String,
    /// Its status now.
    pub status: crate::store::DocumentStatus,
    /// True when identical bytes were already in the knowledge base (nothing re-embedded).
    pub existing: bool,
    /// The document this one replaces once ready.
    pub replaces: Option<String>,
}

/// A file of an upload refused on its own (its siblings are unaffected).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Refused {
    /// Position of the file in the request, from 0.
    pub index: usize,
    /// Its name.
    pub name: String,
    /// Why, as a stable code: `payload_too_large`, `unsupported_media_type` or
    /// `invalid_request` (an empty file).
    pub code: String,
    /// Why, for people.
    pub detail: String,
}

/// Answer to an upload.
#[derive(Debug, Clone)]
pub struct Receipt {
    /// The job tracking the new documents.
    pub job_id: String,
    /// One entry per admitted file (queued, or `existing` for identical bytes), in request order.
    pub documents: Vec<Accepted>,
    /// One entry per refused file, in request order.
    pub refused: Vec<Refused>,
}

/// A client name reduced to something safe to display: the last path component, trimmed,
/// control characters removed, at most 255 bytes.
pub fn display_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or(raw);
    let mut name: String = last.chars().filter(|c| !c.is_control()).collect();
    name = name.trim().to_owned();
    while name.len() > 255 {
        name.pop();
    }
    if name.is_empty() || name == "." || name == ".." {
        "document".to_owned()
    } else {
        name
    }
}

impl Service {
    /// Accepts files for ingestion: stores their bytes durably, registers them and starts
    /// one ingest workflow for them. Identical bytes already in the KB are answered with the
    /// existing document. With an idempotency key, a repeated request returns the first
    /// one's receipt.
    pub fn upload(
        &self,
        p: &Principal,
        kb: &str,
        uploads: Vec<Upload>,
        idempotency_key: Option<String>,
    ) -> Result<Receipt> {
        self.upload_as(p, kb, uploads, Vec::new(), idempotency_key, false)
    }

    /// [`Service::upload`] where some files of the request were already refused by the caller
    /// (`refused` holds their positions; `uploads` are the others, in request order). Each file
    /// is admitted or refused on its own; only when none is admitted is the whole request
    /// refused ([`ServiceError::AllRefused`]).
    pub fn upload_some(
        &self,
        p: &Principal,
        kb: &str,
        uploads: Vec<Upload>,
        refused: Vec<Refused>,
        idempotency_key: Option<String>,
    ) -> Result<Receipt> {
        self.upload_as(p, kb, uploads, refused, idempotency_key, false)
    }

    pub(super) fn upload_as(
        &self,
        p: &Principal,
        kb: &str,
        uploads: Vec<Upload>,
        mut refused: Vec<Refused>,
        idempotency_key: Option<String>,
        keep_names: bool,
    ) -> Result<Receipt> {
        p.require(Scope::Write)?;
        if self.core.stopping() {
            return Err(ServiceError::Unavailable("shutting down"));
        }
        let kb = self.kb(p, kb)?;
        if let Some(key) = &idempotency_key {
            if let Some(receipt) = self.receipt_for_key(p, &kb, key)? {
                return Ok(receipt);
            }
        }
        let limits = &self.core.config.ingest;
        let total = uploads.len() + refused.len();
        if total == 0 {
            return Err(ServiceError::Invalid("the request holds no file".into()));
        }
        if total > limits.max_files_per_request {
            return Err(ServiceError::TooLarge(format!(
                "{total} files in one request; the limit is {}",
                limits.max_files_per_request
            )));
        }
        self.core.models.for_kb(&kb)?;
        // Each file is checked on its own; the refused ones are listed, the others go on.
        let taken: std::collections::HashSet<usize> = refused.iter().map(|r| r.index).collect();
        let mut positions = (0..).filter(|i| !taken.contains(i));
        let mut prepared = Vec::with_capacity(uploads.len());
        for u in uploads {
            let index = positions.next().unwrap_or_default();
            let name = if keep_names {
                u.name.clone()
            } else {
                display_name(&u.name)
            };
            let refuse = |e: ServiceError| Refused {
                index,
                name: name.clone(),
                code: e.code().to_owned(),
                detail: e.to_string(),
            };
            if u.bytes.len() as u64 > limits.max_file_bytes {
                refused.push(refuse(ServiceError::TooLarge(format!(
                    "`{name}` is {} bytes; the limit is {} bytes per file",
                    u.bytes.len(),
                    limits.max_file_bytes
                ))));
                continue;
            }
            if u.bytes.is_empty() {
                refused.push(refuse(ServiceError::Invalid(format!("`{name}` is empty"))));
                continue;
            }
            match detect_declared(&u.bytes, Some(&name), u.declared.as_deref()) {
                Ok(media) if media.is_image() && self.core.ocr.is_err() => {
                    let why = self.core.ocr.as_ref().err().cloned().unwrap_or_default();
                    refused.push(refuse(ServiceError::UnsupportedMediaType(format!(
                        "`{name}` is an image ({}): its text needs OCR, which is unavailable \
                         here: {why}",
                        media.mime()
                    ))));
                }
                Ok(media) => {
                    let sha = sha256_hex(&u.bytes);
                    prepared.push((index, name, media, sha, u));
                }
                Err(e) => refused.push(refuse(ServiceError::UnsupportedMediaType(format!(
                    "`{name}`: {e}"
                )))),
            }
        }
        refused.sort_by_key(|r| r.index);
        for r in &refused {
            metrics::counter!("groundwork_uploads_refused_total", "code" => r.code.clone())
                .increment(1);
        }
        if prepared.is_empty() {
            return Err(ServiceError::AllRefused(refused));
        }
        for (_, _, _, sha, u) in &prepared {
            self.core
                .blobs
                .put(sha, &u.bytes)
                .map_err(ServiceError::io("storing an upload"))?;
        }
        let _admission = self.core.store.enter(Section::Admission)?;
        let queued = self.core.store.count_unfinished()? as usize;
        if queued + prepared.len() > limits.queue_capacity {
            return Err(ServiceError::QueueFull {
                queued,
                retry_after: (queued as u64 / 4).clamp(1, 60),
            });
        }
        let mut receipt = self.register(&kb, prepared, idempotency_key)?;
        receipt.refused = refused;
        Ok(receipt)
    }

    pub(super) fn receipt_for_key(
        &self,
        p: &Principal,
        kb: &Kb,
        key: &str,
    ) -> Result<Option<Receipt>> {
        let page = self
            .core
            .store
            .list_workflows(&crate::store::WorkflowQuery {
                tenant_id: p.tenant_id.clone(),
                kind: Some(WorkflowKind::Ingest.as_str().into()),
                subject: Some(kb.id.clone()),
                limit: 1_000,
                ..Default::default()
            })?;
        let Some(wf) = page
            .items
            .into_iter()
            .find(|w| w.idempotency_key.as_deref() == Some(key))
        else {
            return Ok(None);
        };
        let input: crate::ingest::pipeline::IngestInput = serde_json::from_value(wf.input.clone())?;
        let mut documents = Vec::new();
        for (index, id) in input.documents.into_iter().enumerate() {
            if let Ok(doc) = self.core.store.get_document(&kb.id, &id) {
                documents.push(Accepted {
                    index,
                    document_id: doc.id,
                    name: doc.name,
                    status: doc.status,
                    existing: true,
                    replaces: doc.replaces,
                });
            }
        }
        Ok(Some(Receipt {
            job_id: wf.id,
            documents,
            refused: Vec::new(),
        }))
    }

    pub(super) fn register(
        &self,
        kb: &Kb,
        prepared: Vec<(usize, String, crate::ingest::MediaType, String, Upload)>,
        idempotency_key: Option<String>,
    ) -> Result<Receipt> {
        let job_id = uuid::Uuid::now_v7().to_string();
        self.core.store.create_job(&job_id, &kb.tenant_id, &kb.id)?;
        let mut documents = Vec::with_capacity(prepared.len());
        let mut created = Vec::new();
        for (index, name, media, sha, u) in prepared {
            let inserted = {
                let _blobs = self.core.store.enter(Section::Blobs)?;
                if !self.core.blobs.contains(&sha) {
                    self.core
                        .blobs
                        .put(&sha, &u.bytes)
                        .map_err(ServiceError::io("storing an upload"))?;
                }
                self.core.store.insert_document(&NewDocument {
                    kb_id: kb.id.clone(),
                    job_id: job_id.clone(),
                    name,
                    media_type: media.mime().to_owned(),
                    size: u.bytes.len() as u64,
                    sha256: sha,
                    metadata: u.metadata,
                    password: u.password,
                })?
            };
            let doc = inserted.document;
            metrics::counter!("groundwork_ingest_bytes_total").increment(doc.size);
            if inserted.created {
                created.push(doc.id.clone());
            }
            documents.push(Accepted {
                index,
                document_id: doc.id,
                name: doc.name,
                status: doc.status,
                existing: !inserted.created,
                replaces: doc.replaces,
            });
        }
        // A crash before this line leaves documents without a workflow: adopted at start.
        self.start_ingest(&job_id, kb, created, idempotency_key)?;
        Ok(Receipt {
            job_id,
            documents,
            refused: Vec::new(),
        })
    }

    /// A page of a knowledge base's documents.
    pub fn list_documents(
        &self,
        p: &Principal,
        kb: &str,
        query: &DocumentQuery,
    ) -> Result<Page<Document>> {
        p.require(Scope::Read)?;
        let kb = self.kb(p, kb)?;
        Ok(self.core.store.list_documents(&kb.id, query)?)
    }

    /// One document.
    pub fn get_document(&self, p: &Principal, kb: &str, id: &str) -> Result<Document> {
        p.require(Scope::Read)?;
        let kb = self.kb(p, kb)?;
        Ok(self.core.store.get_document(&kb.id, id)?)
    }

    /// A page of a document's chunks.
    pub fn list_chunks(
        &self,
        p: &Principal,
        kb: &str,
        id: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<ChunkRecord>> {
        p.require(Scope::Read)?;
        let kb = self.kb(p, kb)?;
        let doc = self.core.store.get_document(&kb.id, id)?;
        Ok(self.core.store.list_chunks(&doc.id, offset, limit)?)
    }

    /// One chunk of a knowledge base by its id (as search hits and citations name it).
    pub fn get_chunk(&self, p: &Principal, kb: &str, chunk_id: u64) -> Result<ChunkRecord> {
        p.require(Scope::Read)?;
        let kb = self.kb(p, kb)?;
        let missing = || ServiceError::NotFound {
            kind: "chunk",
            id: chunk_id.to_string(),
        };
        let chunk = self
            .core
            .store
            .chunks_by_id(&[chunk_id])?
            .into_iter()
            .next()
            .ok_or_else(missing)?;
        // A chunk of another knowledge base is as missing as one that never was.
        match self.core.store.get_document(&kb.id, &chunk.document_id) {
            Ok(_) => Ok(chunk),
            Err(StoreError::NotFound { .. }) => Err(missing()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a document; its chunks leave the index at once.
    pub fn delete_document(&self, p: &Principal, kb: &str, id: &str) -> Result<()> {
        p.require(Scope::Write)?;
        let kb = self.kb(p, kb)?;
        let index = self.core.index_of(&kb.id)?;
        let order = index.write_order();
        let deleted = {
            let _blobs = self.core.store.enter(Section::Blobs)?;
            let deleted = self.core.store.delete_document(&kb.id, id)?;
            for sha in &deleted.orphaned {
                let _ = self.core.blobs.remove(sha);
            }
            deleted
        };
        // Changes other replicas committed just before this one go in first, in order.
        self.core.indexes.bring_up(
            &kb.id,
            &index,
            &order,
            self.core.store.as_ref(),
            Some(deleted.index_seq - 1),
        )?;
        if index.applied_seq() < deleted.index_seq {
            index.apply(
                &order,
                &kb.embedding_model,
                &deleted.chunk_ids,
                Vec::new(),
                deleted.index_seq,
            )?;
        }
        Ok(())
    }

    /// An ingest job's progress.
    pub fn job(&self, p: &Principal, id: &str) -> Result<Job> {
        p.require(Scope::Read)?;
        Ok(self.core.store.job(&p.tenant_id, id)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_never_carry_paths() {
        assert_eq!(display_name("../../etc/passwd"), "passwd");
        assert_eq!(display_name("C:\\Users\\x\\report.pdf"), "report.pdf");
        assert_eq!(display_name(".."), "document");
        assert_eq!(display_name("  \u{7}bell.md "), "bell.md");
        assert_eq!(display_name(&"a".repeat(400)).len(), 255);
    }
}
