//! A document's extracted text and the structure chunks need for citations: pages, headings,
//! tables, the engine that read it and the pages OCR recognised. Plain data, shared by the
//! readers (which produce it, some in the isolated worker) and `extract` (which must not be
//! imported by them).

use serde::{Deserialize, Serialize};

use super::builder::Table;
use super::detect::MediaType;
use super::heading::Heading;

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

/// Joins per-page texts with blank lines, recording where each page starts.
#[cfg(test)]
pub fn from_pages(pages: Vec<String>, warnings: Vec<String>) -> Extracted {
    let none = vec![Vec::new(); pages.len()];
    from_pages_with_tables(pages, none, warnings)
}

/// [`from_pages`], with the tables of each page (offsets into that page's text).
pub fn from_pages_with_tables(
    pages: Vec<String>,
    page_tables: Vec<Vec<Table>>,
    warnings: Vec<String>,
) -> Extracted {
    let mut text = String::with_capacity(pages.iter().map(|p| p.len() + 2).sum());
    let mut page_starts = Vec::with_capacity(pages.len());
    let mut tables = Vec::new();
    for (page, page_tables) in pages.into_iter().zip(page_tables) {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        let at = text.len();
        page_starts.push(at);
        text.push_str(&page);
        tables.extend(page_tables.into_iter().map(|t| Table {
            start: t.start + at,
            body: t.body + at,
            end: t.end + at,
            caption: t.caption,
        }));
    }
    Extracted {
        media_type: MediaType::Pdf,
        text,
        page_starts,
        headings: Vec::new(),
        warnings,
        tables,
        engine: String::new(),
        ocr_pages: Vec::new(),
    }
}
