//! One entry point from bytes to [`Extracted`] text, whatever the document type.

use serde::{Deserialize, Serialize};

pub use super::builder::Table;
use super::detect::{detect, MediaType};
pub use super::heading::Heading;
use super::isolate::{self, Isolation};
use super::{csv, html, markdown, rtf, text, IngestError};

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
    /// Tables, whose header rows each chunk of their rows repeats.
    #[serde(default)]
    pub tables: Vec<Table>,
    /// What read the text: `pdf-extract`, `pdftotext`, `tesseract` (`+`-joined when pages
    /// differ), `docx`, `markdown`…
    #[serde(default)]
    pub engine: String,
    /// Pages whose text was recognised by OCR, with Tesseract's mean word confidence.
    #[serde(default)]
    pub ocr_pages: Vec<OcrPage>,
}

/// A page whose text OCR produced.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OcrPage {
    /// 1-based page number.
    pub page: u32,
    /// Mean word confidence, 0–100.
    pub confidence: f32,
}

impl Extracted {
    /// Number of pages (0 for documents without pages).
    pub fn page_count(&self) -> usize {
        self.page_starts.len()
    }

    /// Mean OCR confidence over the pages `first..=last`, when any of them was OCR'd.
    pub fn ocr_confidence(&self, (first, last): (u32, u32)) -> Option<f32> {
        let hits: Vec<f32> = self
            .ocr_pages
            .iter()
            .filter(|p| p.page >= first && p.page <= last)
            .map(|p| p.confidence)
            .collect();
        (!hits.is_empty()).then(|| hits.iter().sum::<f32>() / hits.len() as f32)
    }

    /// A text document without pages or tables.
    pub fn plain(media_type: MediaType, text: String, engine: &str) -> Self {
        Self {
            media_type,
            text,
            page_starts: Vec::new(),
            headings: Vec::new(),
            warnings: Vec::new(),
            tables: Vec::new(),
            engine: engine.to_owned(),
            ocr_pages: Vec::new(),
        }
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

/// Detects the type of `bytes` and extracts its text. Binary formats (PDF, images, Office
/// files, e-books) are read in an isolated process.
pub fn extract(
    bytes: &[u8],
    name: Option<&str>,
    options: &ExtractOptions,
) -> Result<Extracted, IngestError> {
    extract_as(bytes, detect(bytes, name)?, options)
}

/// Extracts the text of `bytes`, already detected as `media_type`.
pub fn extract_as(
    bytes: &[u8],
    media_type: MediaType,
    options: &ExtractOptions,
) -> Result<Extracted, IngestError> {
    let extracted = if media_type.is_isolated() {
        isolate::extract(
            bytes,
            media_type,
            options.password.as_deref(),
            &options.isolation,
        )?
    } else {
        let (decoded, warning) = text::decode(bytes);
        let mut e = match media_type {
            MediaType::Markdown => {
                let (headings, tables) = markdown::structure(&decoded);
                let mut e = Extracted::plain(media_type, decoded, "markdown");
                e.headings = headings;
                e.tables = tables;
                e
            }
            MediaType::Html => {
                let built = html::extract(&decoded);
                let mut e = Extracted::plain(media_type, built.text, "html");
                e.headings = built.headings;
                e.tables = built.tables;
                e
            }
            MediaType::Rtf => Extracted::plain(media_type, rtf::to_text(&decoded), "rtf"),
            MediaType::Csv => {
                let built = csv::extract(&decoded);
                let mut e = Extracted::plain(media_type, built.text, "csv");
                e.tables = built.tables;
                e
            }
            _ => Extracted::plain(media_type, decoded, "text"),
        };
        e.warnings.extend(warning);
        e
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
        tables: Vec::new(),
        engine: String::new(),
        ocr_pages: Vec::new(),
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
