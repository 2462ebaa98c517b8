//! Running the extraction of binary formats (PDF, images, Office files, e-books) in a child
//! process with a time bound and a memory cap.
//!
//! `catch_unwind` cannot stop a parser that loops or allocates forever, so each such document
//! is parsed by a separate process (the `groundwork extract-worker` subcommand, or any program
//! speaking the same protocol). The parent writes a request to the child's stdin, reads one
//! JSON answer from its stdout, and kills the child's whole process group (it may be running
//! `pdftotext`, `pdftoppm` or `tesseract`) when the deadline passes. The child caps its own
//! address space with `setrlimit` (inherited by the programs it runs), so a memory blow-up
//! ends as an allocation failure in the child.
//!
//! Protocol: stdin = 4-byte little-endian header length, JSON [`WorkerRequest`], the bytes.
//! stdout = one JSON [`WorkerAnswer`].

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::detect::MediaType;
use super::extracted::Extracted;
use super::pdf::{self, PdfSettings};
use super::tool::{self, ToolError};
use super::{ocr, office, IngestError};

/// How to start and bound the extractor process.
#[derive(Debug, Clone)]
pub struct Isolation {
    /// The program to run (normally the `groundwork` binary itself).
    pub program: PathBuf,
    /// Arguments that select the worker mode (normally `["extract-worker"]`).
    pub args: Vec<String>,
    /// Wall-clock bound for one document.
    pub timeout: Duration,
    /// Address-space cap of the child, in bytes.
    pub memory_limit: u64,
    /// The second PDF engine's bound and OCR settings.
    pub pdf: PdfSettings,
}

impl Isolation {
    /// Isolation through the running executable's `extract-worker` subcommand.
    pub fn current_exe() -> Result<Self, IngestError> {
        let program = std::env::current_exe()
            .map_err(|e| IngestError::Worker(format!("cannot locate own executable: {e}")))?;
        Ok(Self::with_program(program))
    }

    /// Isolation through `program extract-worker`, with default bounds (60 s, 2 GiB).
    pub fn with_program(program: PathBuf) -> Self {
        Self {
            program,
            args: vec!["extract-worker".into()],
            timeout: Duration::from_secs(60),
            memory_limit: 2 << 30,
            pdf: PdfSettings {
                ocr: ocr::OcrSettings::default(),
                poppler_timeout_secs: 60,
            },
        }
    }

    /// The wall-clock bound of one document of `media_type`: the parse bound, plus OCR's
    /// budget for formats that may need it.
    pub fn deadline(&self, media_type: MediaType) -> Duration {
        if media_type == MediaType::Pdf || media_type.is_image() {
            self.timeout + self.pdf.ocr.document_budget()
        } else {
            self.timeout
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct WorkerRequest {
    media_type: MediaType,
    password: Option<String>,
    memory_limit: u64,
    cpu_seconds: u64,
    pdf: PdfSettings,
}

#[derive(Debug, Serialize, Deserialize)]
enum WorkerAnswer {
    Ok(Box<Extracted>),
    Err {
        code: String,
        kind: String,
        detail: String,
    },
}

/// Most text we accept back from one PDF (a 100 MB upload rarely holds more than a few MB of
/// text); a worker printing more is treated as misbehaving.
const MAX_ANSWER_BYTES: u64 = 256 << 20;

/// Extracts a document of `media_type` in an isolated child process.
pub fn extract(
    bytes: &[u8],
    media_type: MediaType,
    password: Option<&str>,
    iso: &Isolation,
) -> Result<Extracted, IngestError> {
    let deadline = iso.deadline(media_type);
    let request = WorkerRequest {
        media_type,
        password: password.map(str::to_owned),
        memory_limit: iso.memory_limit,
        cpu_seconds: deadline.as_secs() + 2,
        pdf: iso.pdf.clone(),
    };
    let header = serde_json::to_vec(&request).map_err(|e| IngestError::Worker(e.to_string()))?;
    let mut command = Command::new(&iso.program);
    command.args(&iso.args).env("RUST_BACKTRACE", "0");
    let len = (header.len() as u32).to_le_bytes();
    let done = tool::supervise(
        &mut command,
        &[&len, &header, bytes],
        deadline,
        MAX_ANSWER_BYTES,
    )
    .map_err(|e| match e {
        ToolError::Timeout { .. } => IngestError::Timeout {
            seconds: deadline.as_secs(),
        },
        ToolError::Missing(p) => IngestError::Worker(format!("{p}: not found")),
        ToolError::Io(e) => IngestError::Worker(e),
    })?;
    let (status, out, err) = (done.status, done.stdout, done.stderr);
    if let Ok(answer) = serde_json::from_slice::<WorkerAnswer>(&out) {
        return match answer {
            WorkerAnswer::Ok(extracted) => Ok(*extracted),
            WorkerAnswer::Err { code, kind, detail } => {
                Err(decode_error(&code, &kind, detail, iso))
            }
        };
    }
    let stderr = String::from_utf8_lossy(&err);
    if stderr.contains("memory allocation") || stderr.contains("capacity overflow") {
        return Err(IngestError::MemoryLimit {
            mib: iso.memory_limit >> 20,
        });
    }
    Err(IngestError::Crashed(describe_exit(status)))
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return match sig {
                libc::SIGXCPU => "CPU time limit exceeded".into(),
                libc::SIGSEGV => "segmentation fault".into(),
                libc::SIGABRT => "aborted".into(),
                other => format!("killed by signal {other}"),
            };
        }
    }
    format!("exited with {status} without an answer")
}

fn decode_error(code: &str, kind: &str, detail: String, iso: &Isolation) -> IngestError {
    match code {
        "encrypted" => IngestError::Encrypted,
        "no_text" => IngestError::NoText,
        "extraction_memory_limit" => IngestError::MemoryLimit {
            mib: iso.memory_limit >> 20,
        },
        "unsupported_media_type" => IngestError::Unsupported(detail),
        // A program the worker ran (pdftotext, tesseract) overran its own bound.
        "extraction_timeout" => IngestError::Timeout {
            seconds: iso
                .pdf
                .poppler_timeout_secs
                .max(iso.pdf.ocr.page_timeout_secs),
        },
        "extractor_unavailable" => IngestError::Worker(detail),
        _ => IngestError::Malformed {
            kind: KINDS
                .iter()
                .find(|k| **k == kind)
                .copied()
                .unwrap_or("document"),
            detail,
        },
    }
}

/// The `kind`s of [`IngestError::Malformed`] the worker reports.
const KINDS: &[&str] = &["PDF", "DOCX", "PPTX", "ODT", "EPUB", "spreadsheet", "image"];

/// Extracts inside the worker process.
fn work(request: &WorkerRequest, bytes: &[u8]) -> Result<Extracted, IngestError> {
    let media_type = request.media_type;
    match media_type {
        MediaType::Pdf => pdf::extract(bytes, request.password.as_deref(), &request.pdf),
        m if m.is_image() => image(bytes, m, &request.pdf.ocr),
        m => office::extract(m, bytes),
    }
}

/// An image's text, by OCR.
fn image(
    bytes: &[u8],
    media_type: MediaType,
    settings: &ocr::OcrSettings,
) -> Result<Extracted, IngestError> {
    if !settings.enabled {
        return Err(IngestError::Unsupported(
            "images are read by OCR, which is switched off (ingest.ocr.enabled)".into(),
        ));
    }
    let scratch = super::tool::Scratch::new()
        .map_err(|e| IngestError::Worker(format!("scratch dir: {e}")))?;
    let path = scratch.file("image");
    std::fs::write(&path, bytes).map_err(|e| IngestError::Worker(format!("scratch file: {e}")))?;
    let pages =
        ocr::image(&path, settings, media_type == MediaType::Tiff).map_err(|e| match e {
            super::tool::ToolError::Missing(p) => {
                IngestError::Worker(format!("{p} is not installed: images cannot be read"))
            }
            super::tool::ToolError::Timeout { seconds, .. } => IngestError::Timeout { seconds },
            super::tool::ToolError::Io(detail) => IngestError::Malformed {
                kind: "image",
                detail,
            },
        })?;
    let mut b = super::builder::Builder::new();
    let mut ocr_pages = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        b.page();
        b.paragraph(&page.text);
        ocr_pages.push(super::extracted::OcrPage {
            page: i as u32 + 1,
            confidence: page.confidence,
        });
    }
    let built = b.finish();
    let mut e = Extracted::plain(media_type, built.text, "tesseract");
    // Pages even for a one-page image: OCR marks are per page.
    e.page_starts = built.page_starts;
    e.ocr_pages = ocr_pages;
    if e.text.trim().is_empty() {
        return Err(IngestError::NoText);
    }
    Ok(e)
}

/// The worker side: reads one request from `input`, extracts, writes one answer to `output`.
/// Returns the process exit code. Called by `groundwork extract-worker`.
pub fn run_worker(mut input: impl Read, mut output: impl Write) -> i32 {
    let mut len = [0u8; 4];
    if input.read_exact(&mut len).is_err() {
        return 2;
    }
    let mut header = vec![0u8; u32::from_le_bytes(len) as usize];
    if input.read_exact(&mut header).is_err() {
        return 2;
    }
    let Ok(request) = serde_json::from_slice::<WorkerRequest>(&header) else {
        return 2;
    };
    limit_resources(request.memory_limit, request.cpu_seconds);
    let mut bytes = Vec::new();
    if input.read_to_end(&mut bytes).is_err() {
        return 2;
    }
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| work(&request, &bytes));
    let answer = match result {
        Ok(Ok(extracted)) => WorkerAnswer::Ok(Box::new(extracted)),
        Ok(Err(e)) => {
            let code = e.code().into();
            let (kind, detail) = match e {
                IngestError::Malformed { kind, detail } => (kind.to_owned(), detail),
                IngestError::Unsupported(detail) | IngestError::Worker(detail) => {
                    (String::new(), detail)
                }
                other => (String::new(), other.to_string()),
            };
            WorkerAnswer::Err { code, kind, detail }
        }
        Err(panic) => WorkerAnswer::Err {
            code: "malformed".into(),
            kind: "document".into(),
            detail: format!("the parser failed: {}", pdf::panic_text(&panic)),
        },
    };
    let written = serde_json::to_writer(&mut output, &answer).is_ok() && output.flush().is_ok();
    if written {
        0
    } else {
        3
    }
}

fn limit_resources(memory: u64, cpu_seconds: u64) {
    #[cfg(unix)]
    // SAFETY: setrlimit only lowers this process's own limits.
    unsafe {
        let mem = libc::rlimit {
            rlim_cur: memory,
            rlim_max: memory,
        };
        libc::setrlimit(libc::RLIMIT_AS, &mem);
        let cpu = libc::rlimit {
            rlim_cur: cpu_seconds,
            rlim_max: cpu_seconds + 1,
        };
        libc::setrlimit(libc::RLIMIT_CPU, &cpu);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn frame(password: Option<&str>, pdf: &[u8]) -> Vec<u8> {
        let header = serde_json::to_vec(&WorkerRequest {
            media_type: MediaType::Pdf,
            password: password.map(str::to_owned),
            memory_limit: u64::MAX,
            cpu_seconds: u64::MAX - 1,
            pdf: PdfSettings::default(),
        })
        .expect("json");
        let mut v = (header.len() as u32).to_le_bytes().to_vec();
        v.extend(header);
        v.extend_from_slice(pdf);
        v
    }

    #[test]
    fn worker_answers_malformed_for_garbage() {
        let mut out = Vec::new();
        let code = run_worker(frame(None, b"%PDF-1.4 junk").as_slice(), &mut out);
        assert_eq!(code, 0);
        let answer: WorkerAnswer = serde_json::from_slice(&out).expect("answer");
        assert!(matches!(answer, WorkerAnswer::Err { ref code, .. } if code == "malformed"));
    }

    #[test]
    fn missing_program_is_a_worker_error() {
        let iso = Isolation::with_program("/nonexistent/groundwork".into());
        let err = extract(b"%PDF-1.4", MediaType::Pdf, None, &iso).expect_err("no program");
        assert!(matches!(err, IngestError::Worker(_)));
        assert!(err.is_retryable());
    }

    #[test]
    fn a_hanging_worker_is_killed_at_the_deadline() {
        let mut iso = Isolation::with_program("/bin/sleep".into());
        iso.args = vec!["30".into()];
        iso.timeout = Duration::from_millis(300);
        iso.pdf.ocr.enabled = false;
        let started = Instant::now();
        let err = extract(b"%PDF-1.4", MediaType::Pdf, None, &iso).expect_err("timeout");
        assert!(matches!(err, IngestError::Timeout { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_crashing_worker_is_reported() {
        let mut iso = Isolation::with_program("/bin/sh".into());
        iso.args = vec!["-c".into(), "kill -SEGV $$".into()];
        iso.timeout = Duration::from_secs(5);
        let err = extract(b"%PDF-1.4", MediaType::Pdf, None, &iso).expect_err("crash");
        assert_eq!(err, IngestError::Crashed("segmentation fault".into()));
    }
}
