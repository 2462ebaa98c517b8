//! One entry point from bytes to [`Extracted`] text, whatever the document type.

use serde::{Deserialize, Serialize};

use super::detect::{detect, MediaType};
pub use super::heading::Heading;
use super::isolate::{self, Isolation};
use super::{html, markdown, text, IngestError};

/// A document's text with the structure chunks need for citations.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Extracted {
    /// What the document was detected to be.
    pub media_type: MediaType,
    /// The whole text; every offset below points into it.
    pub text: String,
    /// Byte offset where each page starts (PDF only; empty for other types). Page `i` (1-based
    /// `i + 1`) spans `page_starts[i]..page_starts[i + 1]`.
    pub page_starts: Vec<usize>,
    /// Headings in document order.
    pub headings: Vec<Heading>,
    /// Problems that did not stop extraction (replaced bytes, unreadable pages).
    pub warnings: Vec<String>,
}

impl Extracted {
    /// Number of pages (0 for documents without pages).
    pub fn page_count(&self) -> usize {
        self.page_starts.len()
    }

    /// 1-based page holding byte `offset`, or `None` for documents without pages.
    pub fn page_at(&self, offset: usize) -> Option<u32> {
        if self.page_starts.is_empty() {
            return None;
        }
        let idx = self.page_starts.partition_point(|&s| s <= offset);
        Some(idx.max(1) as u32)
    }
}

/// Options for [`extract`].
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// How PDFs are isolated.
    pub isolation: Isolation,
    /// Password for encrypted PDFs.
    pub password: Option<String>,
}

/// Detects the type of `bytes` and extracts its text. PDFs are parsed in an isolated process.
pub fn extract(
    bytes: &[u8],
    name: Option<&str>,
    options: &ExtractOptions,
) -> Result<Extracted, IngestError> {
    let media_type = detect(bytes, name)?;
    let extracted = match media_type {
        MediaType::Pdf => {
            let pages =
                isolate::extract_pdf(bytes, options.password.as_deref(), &options.isolation)?;
            from_pages(pages.pages, pages.warnings)
        }
        MediaType::Markdown => {
            let (text, warning) = text::decode(bytes);
            let headings = markdown::headings(&text);
            Extracted {
                media_type,
                text,
                page_starts: Vec::new(),
                headings,
                warnings: warning.into_iter().collect(),
            }
        }
        MediaType::Html => {
            let (source, warning) = text::decode(bytes);
            let (text, headings) = html::extract(&source);
            Extracted {
                media_type,
                text,
                page_starts: Vec::new(),
                headings,
                warnings: warning.into_iter().collect(),
            }
        }
        MediaType::Text => {
            let (text, warning) = text::decode(bytes);
            Extracted {
                media_type,
                text,
                page_starts: Vec::new(),
                headings: Vec::new(),
                warnings: warning.into_iter().collect(),
            }
        }
    };
    if extracted.text.trim().is_empty() {
        return Err(IngestError::NoText);
    }
    Ok(extracted)
}

/// Joins per-page texts with blank lines, recording where each page starts.
pub fn from_pages(pages: Vec<String>, warnings: Vec<String>) -> Extracted {
    let mut text = String::with_capacity(pages.iter().map(|p| p.len() + 2).sum());
    let mut page_starts = Vec::with_capacity(pages.len());
    for page in pages {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        page_starts.push(text.len());
        text.push_str(&page);
    }
    Extracted {
        media_type: MediaType::Pdf,
        text,
        page_starts,
        headings: Vec::new(),
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_located_by_offset() {
        let e = from_pages(vec!["one".into(), String::new(), "three".into()], vec![]);
        assert_eq!(e.text, "one\n\n\n\nthree");
        assert_eq!(e.page_starts, vec![0, 5, 7]);
        assert_eq!(e.page_at(0), Some(1));
        assert_eq!(e.page_at(4), Some(1));
        assert_eq!(e.page_at(7), Some(3));
    }

    #[test]
    fn empty_text_is_an_error() {
        let options = ExtractOptions {
            isolation: Isolation::with_program("/nonexistent".into()),
            password: None,
        };
        assert_eq!(
            extract(b"  \n ", Some("a.txt"), &options).err(),
            Some(IngestError::NoText)
        );
    }
}
