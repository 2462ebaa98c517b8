//! One entry point from bytes to [`Extracted`] text, whatever the document type.

pub use super::builder::Table;
use super::detect::{detect, MediaType};
#[cfg(test)]
use super::extracted::from_pages;
pub use super::extracted::{Extracted, OcrPage};
pub use super::heading::Heading;
use super::isolate::{self, Isolation};
use super::{csv, html, markdown, rtf, text, IngestError};

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
