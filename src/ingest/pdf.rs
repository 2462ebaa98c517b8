//! PDF text extraction with pdf-extract, page by page.
//!
//! This code runs only inside the isolated extractor process ([`super::isolate`]): pdf-extract
//! and lopdf can panic, loop or allocate without bound on hostile input, and none of that may
//! reach the service. Callers use [`super::isolate::extract_pdf`].

use lopdf::Document;

use super::IngestError;

/// Extracts the text of every page of `bytes`. A page that fails to extract yields an empty
/// string (and a warning) rather than failing the whole document.
pub fn extract_pages(bytes: &[u8], password: Option<&str>) -> Result<PdfPages, IngestError> {
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
    let page_numbers: Vec<u32> = doc.get_pages().keys().copied().collect();
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
    if pages.iter().all(|p| p.trim().is_empty()) {
        if let Some(first) = warnings.first() {
            return Err(IngestError::Malformed {
                kind: "PDF",
                detail: format!("no page could be read ({first})"),
            });
        }
        return Err(IngestError::NoText);
    }
    Ok(PdfPages { pages, warnings })
}

/// Text per page plus the problems met on the way.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PdfPages {
    /// One entry per page, in page order.
    pub pages: Vec<String>,
    /// Pages that could not be extracted, and why.
    pub warnings: Vec<String>,
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
}
