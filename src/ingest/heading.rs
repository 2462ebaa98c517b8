//! A heading of an extracted document: the structure the Markdown and HTML readers find and
//! the chunker follows. Plain data, shared by the readers and `extract` (which must not be
//! imported by them).

use serde::{Deserialize, Serialize};

/// A heading found in a document, located by byte offset in the extracted text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heading {
    /// 1 for a top-level heading, up to 6.
    pub level: u8,
    /// The heading's text.
    pub title: String,
    /// Byte offset of the heading in the extracted text.
    pub offset: usize,
}
