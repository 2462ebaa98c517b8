//! PDF text extraction: pdf-extract page by page, poppler's `pdftotext` as a second engine
//! (kept page by page where it reads clearly more), and OCR of pages that still hold no text.
//!
//! This code runs only inside the isolated extractor process ([`super::isolate`]): pdf-extract
//! and lopdf can panic, loop or allocate without bound on hostile input, and none of that may
//! reach the service. Callers use [`super::isolate::extract`].

use std::time::Duration;

use lopdf::Document;

use super::builder::Table;
use super::extracted::{from_pages_with_tables, Extracted, OcrPage};
use super::layout;
use super::ocr::{self, OcrSettings};
use super::poppler;
use super::tool::Scratch;
use super::IngestError;

/// How the PDF engines and OCR may run.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PdfSettings {
    /// OCR of pages without text.
    pub ocr: OcrSettings,
    /// Bound of one `pdftotext` run, seconds.
    pub poppler_timeout_secs: u64,
}

/// A page with fewer non-space characters than this has no usable text layer (OCR candidate).
const EMPTY_PAGE_CHARS: usize = 10;

/// A page holding a scan-sized image with fewer non-space characters than this is OCR'd too.
const PARTIAL_LAYER_CHARS: usize = 200;

/// Whether a second engine's `x` characters should replace `y`: clearly more, or any more
/// where `y` is next to nothing.
fn better(x: usize, y: usize) -> bool {
    x > y && (y < EMPTY_PAGE_CHARS || clearly_more(x, y))
}

/// Whether `x` characters are clearly more than `y`: 20 % and 20 characters more.
fn clearly_more(x: usize, y: usize) -> bool {
    x > y + y / 5 + 20
}

/// Extracts a PDF's text with every engine available: pdf-extract, then `pdftotext` where it
/// reads clearly more, then OCR of the pages still (nearly) empty.
pub fn extract(
    bytes: &[u8],
    password: Option<&str>,
    settings: &PdfSettings,
) -> Result<Extracted, IngestError> {
    let first = extract_pages(bytes, password);
    let scanned = first
        .as_ref()
        .map(|a| a.scanned.clone())
        .unwrap_or_default();
    let scratch = Scratch::new().map_err(|e| IngestError::Worker(format!("scratch dir: {e}")))?;
    let path = scratch.file("document.pdf");
    std::fs::write(&path, bytes).map_err(|e| IngestError::Worker(format!("scratch file: {e}")))?;
    let timeout = Duration::from_secs(settings.poppler_timeout_secs.max(1));
    let second = poppler::pages(&path, password, timeout);
    // An engine that opened the file and found nothing means no text, not damage.
    let poppler_opened = matches!(second, Ok(Some(_)));
    let (mut pages, mut engines, mut warnings) = match (first, second) {
        (Ok(a), Ok(Some(b))) => merge(a, b),
        (Ok(a), Ok(None)) => {
            let n = a.pages.len();
            (a.pages, vec![Engine::PdfExtract; n], a.warnings)
        }
        (Ok(a), Err(e)) => {
            let n = a.pages.len();
            let mut warnings = a.warnings;
            warnings.push(format!("pdftotext: {e}"));
            (a.pages, vec![Engine::PdfExtract; n], warnings)
        }
        (Err(_), Ok(Some(b))) => {
            let n = b.len();
            let pages = b.iter().map(|p| tidy(p)).collect();
            (pages, vec![Engine::Pdftotext; n], Vec::new())
        }
        (Err(a), Ok(None)) => return Err(encrypted_if_marked(a, bytes)),
        (Err(a), Err(b)) => {
            return Err(
                if a == IngestError::Encrypted || b == IngestError::Encrypted {
                    IngestError::Encrypted
                } else {
                    encrypted_if_marked(a, bytes)
                },
            )
        }
    };
    let page_tables = if poppler_opened {
        tables(&path, password, timeout, &mut pages, &mut engines)
    } else {
        vec![Vec::new(); pages.len()]
    };
    let mut ocr_pages = Vec::new();
    // Candidates: pages without a text layer, and scanned pages whose layer is a few words (a
    // stamp, a page number); OCR replaces a page's text only where it reads clearly more.
    let scanned_page = |i: usize| scanned.len() == pages.len() && scanned[i];
    let empty: Vec<u32> = pages
        .iter()
        .enumerate()
        .filter(|&(i, p)| {
            let n = non_space(p);
            n < EMPTY_PAGE_CHARS || (scanned_page(i) && n < PARTIAL_LAYER_CHARS)
        })
        .map(|(i, _)| i as u32 + 1)
        .collect();
    if settings.ocr.enabled && !empty.is_empty() {
        let chosen = &empty[..empty.len().min(settings.ocr.max_pages)];
        if chosen.len() < empty.len() {
            warnings.push(format!(
                "{} page(s) without text were not recognised (ingest.ocr.max_pages = {})",
                empty.len() - chosen.len(),
                settings.ocr.max_pages
            ));
        }
        for (page, result) in ocr::pdf_pages(&path, password, chosen, &settings.ocr, &scratch) {
            let i = page as usize - 1;
            match result {
                Ok(read)
                    if read.words > 0
                        && clearly_more(non_space(&read.text), non_space(&pages[i])) =>
                {
                    pages[i] = read.text;
                    engines[i] = Engine::Tesseract;
                    ocr_pages.push(OcrPage {
                        page,
                        confidence: read.confidence,
                    });
                }
                Ok(_) => {}
                Err(e) => warnings.push(format!("page {page}: OCR failed: {e}")),
            }
        }
    }
    if pages.iter().all(|p| p.trim().is_empty()) {
        if let Some(first) = warnings.first().filter(|_| !poppler_opened) {
            return Err(IngestError::Malformed {
                kind: "PDF",
                detail: format!("no page could be read ({first})"),
            });
        }
        return Err(IngestError::NoText);
    }
    let mut extracted = from_pages_with_tables(pages, page_tables, warnings);
    extracted.engine = Engine::describe(&engines);
    extracted.ocr_pages = ocr_pages;
    Ok(extracted)
}

/// Pages holding a table recognisable from its words' positions are rewritten with it (when
/// the rewrite keeps at least 90 % of the page's characters); returns each page's tables.
fn tables(
    path: &str,
    password: Option<&str>,
    timeout: Duration,
    pages: &mut [String],
    engines: &mut [Engine],
) -> Vec<Vec<Table>> {
    let mut out = vec![Vec::new(); pages.len()];
    let Some(words) = poppler::words(path, password, pages.len(), timeout) else {
        return out;
    };
    for (i, words) in words.iter().enumerate() {
        let Some((text, tables)) = layout::page_with_tables(words) else {
            continue;
        };
        if non_space(&text) * 10 >= non_space(&pages[i]) * 9 {
            pages[i] = text;
            engines[i] = Engine::Pdftotext;
            out[i] = tables;
        }
    }
    out
}

/// The program that produced a page's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Engine {
    PdfExtract,
    Pdftotext,
    Tesseract,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::PdfExtract => "pdf-extract",
            Engine::Pdftotext => "pdftotext",
            Engine::Tesseract => "tesseract",
        }
    }

    /// The engines of a document's pages, `+`-joined in a fixed order.
    fn describe(pages: &[Engine]) -> String {
        let mut used: Vec<Engine> = pages.to_vec();
        used.sort();
        used.dedup();
        used.iter().map(|e| e.name()).collect::<Vec<_>>().join("+")
    }
}

/// Page by page, pdftotext's text where it holds clearly more (20 % and 20 characters more)
/// than pdf-extract's, or any text where pdf-extract's is next to nothing; when the engines disagree on the page count (a rebuilt xref table),
/// the whole document from the engine that read more.
fn merge(a: PdfPages, b: Vec<String>) -> (Vec<String>, Vec<Engine>, Vec<String>) {
    let b: Vec<String> = b.iter().map(|p| tidy(p)).collect();
    if a.pages.len() != b.len() {
        let (ta, tb) = (
            a.pages.iter().map(|p| non_space(p)).sum::<usize>(),
            b.iter().map(|p| non_space(p)).sum::<usize>(),
        );
        if better(tb, ta) {
            let n = b.len();
            return (b, vec![Engine::Pdftotext; n], a.warnings);
        }
        let n = a.pages.len();
        return (a.pages, vec![Engine::PdfExtract; n], a.warnings);
    }
    let mut engines = Vec::with_capacity(b.len());
    let pages = a
        .pages
        .into_iter()
        .zip(b)
        .map(|(pa, pb)| {
            if better(non_space(&pb), non_space(&pa)) {
                engines.push(Engine::Pdftotext);
                pb
            } else {
                engines.push(Engine::PdfExtract);
                pa
            }
        })
        .collect();
    (pages, engines, a.warnings)
}

fn non_space(s: &str) -> usize {
    s.chars().filter(|c| !c.is_whitespace()).count()
}

/// A file with an `/Encrypt` entry that no engine could open is reported as encrypted, not
/// as damaged: a password is what the user can do something about.
fn encrypted_if_marked(e: IngestError, bytes: &[u8]) -> IngestError {
    let marked = bytes.windows(8).any(|w| w == b"/Encrypt");
    if marked && matches!(e, IngestError::Malformed { .. }) {
        IngestError::Encrypted
    } else {
        e
    }
}

/// Extracts the text of every page of `bytes` with pdf-extract. A page that fails to extract
/// yields an empty string (and a warning) rather than failing the whole document.
fn extract_pages(bytes: &[u8], password: Option<&str>) -> Result<PdfPages, IngestError> {
    let mut doc = match password {
        Some(pw) => Document::load_mem_with_options(bytes, lopdf::LoadOptions::with_password(pw)),
        None => Document::load_mem(bytes),
    }
    .map_err(|e| classify_load_error(&e))?;
    if doc.is_encrypted() {
        // Owner-only protection uses an empty user password: such files open for everyone.
        let attempt = password.unwrap_or("");
        if doc.decrypt(attempt).is_err() {
            return Err(IngestError::Encrypted);
        }
    }
    let page_ids = doc.get_pages();
    let page_numbers: Vec<u32> = page_ids.keys().copied().collect();
    let scanned: Vec<bool> = page_ids.values().map(|&id| holds_scan(&doc, id)).collect();
    if page_numbers.is_empty() {
        return Err(IngestError::Malformed {
            kind: "PDF",
            detail: "the document has no pages".into(),
        });
    }
    let mut pages = Vec::with_capacity(page_numbers.len());
    let mut warnings = Vec::new();
    for number in page_numbers {
        // pdf-extract panics on some fonts and encodings; a panic loses only its page.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut text = String::new();
            let mut out = pdf_extract::PlainTextOutput::new(&mut text);
            pdf_extract::output_doc_page(&doc, &mut out, number).map(|()| text)
        }));
        match result {
            Ok(Ok(text)) => pages.push(tidy(&text)),
            Ok(Err(e)) => {
                warnings.push(format!("page {number}: {e}"));
                pages.push(String::new());
            }
            Err(panic) => {
                warnings.push(format!(
                    "page {number}: the PDF parser failed: {}",
                    panic_text(&panic)
                ));
                pages.push(String::new());
            }
        }
    }
    // All pages empty is not decided here: the other engine or OCR may read them.
    Ok(PdfPages {
        pages,
        warnings,
        scanned,
    })
}

/// Whether a page holds an image the size of a scan (half a megapixel or more).
fn holds_scan(doc: &Document, page: lopdf::ObjectId) -> bool {
    doc.get_page_images(page)
        .map(|images| {
            images
                .iter()
                .any(|i| i.width.saturating_mul(i.height) >= 500_000)
        })
        .unwrap_or(false)
}

/// Text per page plus the problems met on the way.
#[derive(Debug, Clone, Default)]
struct PdfPages {
    /// One entry per page, in page order.
    pages: Vec<String>,
    /// Pages that could not be extracted, and why.
    warnings: Vec<String>,
    /// Per page: whether it holds a scan-sized image (its text layer may be partial).
    scanned: Vec<bool>,
}

/// The message of a caught panic.
pub fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

fn classify_load_error(e: &lopdf::Error) -> IngestError {
    let detail = e.to_string();
    if matches!(e, lopdf::Error::Decryption(_)) || detail.to_lowercase().contains("password") {
        return IngestError::Encrypted;
    }
    IngestError::Malformed {
        kind: "PDF",
        detail,
    }
}

/// Normalises pdf-extract's output: trailing spaces removed, runs of blank lines folded to one,
/// leading and trailing blank lines dropped.
fn tidy(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut blank_run = 0;
    for line in raw.lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank_run > 0 { "\n\n" } else { "\n" });
        }
        blank_run = 0;
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidy_folds_blank_runs() {
        assert_eq!(tidy("\n\n a  \n\n\n\nb\nc  \n\n"), " a\n\nb\nc");
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let err = extract_pages(b"%PDF-1.4\nthis is not a pdf", None).expect_err("garbage");
        assert_eq!(err.code(), "malformed");
    }

    #[test]
    fn the_engine_that_reads_clearly_more_wins_each_page() {
        let a = PdfPages {
            pages: vec![
                "same text here".into(),
                "x".into(),
                "a long page of text".into(),
            ],
            warnings: vec![],
            scanned: vec![false; 3],
        };
        let b = vec![
            "same text here.".to_owned(),
            "the font pdf-extract could not map reads fine here".to_owned(),
            "a long page".to_owned(),
        ];
        let (pages, engines, _) = merge(a, b);
        assert_eq!(
            pages[1],
            "the font pdf-extract could not map reads fine here"
        );
        assert_eq!(
            engines,
            vec![Engine::PdfExtract, Engine::Pdftotext, Engine::PdfExtract]
        );
        assert_eq!(Engine::describe(&engines), "pdf-extract+pdftotext");
    }

    #[test]
    fn an_unopenable_file_with_an_encrypt_entry_is_encrypted() {
        let damaged = IngestError::Malformed {
            kind: "PDF",
            detail: "no pages".into(),
        };
        let marked = b"%PDF-1.4 trailer << /Encrypt 5 0 R >>";
        assert_eq!(
            encrypted_if_marked(damaged.clone(), marked),
            IngestError::Encrypted
        );
        assert_eq!(encrypted_if_marked(damaged.clone(), b"%PDF-1.4"), damaged);
    }
}
