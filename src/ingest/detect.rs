//! Media-type detection from content first, file name second.

use serde::{Deserialize, Serialize};

use super::IngestError;

/// The document types Groundwork reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaType {
    Pdf,
    Markdown,
    Html,
    Text,
}

impl MediaType {
    /// The IANA media type string.
    pub fn mime(self) -> &'static str {
        match self {
            MediaType::Pdf => "application/pdf",
            MediaType::Markdown => "text/markdown",
            MediaType::Html => "text/html",
            MediaType::Text => "text/plain",
        }
    }
}

const BINARY_MAGIC: &[(&[u8], &str)] = &[
    (b"\x89PNG", "PNG image"),
    (b"\xFF\xD8\xFF", "JPEG image"),
    (b"GIF8", "GIF image"),
    (b"PK\x03\x04", "ZIP archive (docx/xlsx/zip)"),
    (b"\x1F\x8B", "gzip archive"),
    (b"\x7FELF", "executable"),
    (b"7z\xBC\xAF", "7z archive"),
    (b"Rar!", "RAR archive"),
];

/// Decides the media type of `bytes`. The content decides where it can (a PDF named `.txt` is a
/// PDF); the file name only separates Markdown from plain text, which content cannot always do.
pub fn detect(bytes: &[u8], name: Option<&str>) -> Result<MediaType, IngestError> {
    let head = &bytes[..bytes.len().min(1024)];
    if find(head, b"%PDF-").is_some() {
        return Ok(MediaType::Pdf);
    }
    for (magic, what) in BINARY_MAGIC {
        if bytes.starts_with(magic) {
            return Err(IngestError::Unsupported(format!(
                "{what} is not a text document"
            )));
        }
    }
    let utf16 = bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF");
    let sample = &bytes[..bytes.len().min(8192)];
    if !utf16 && looks_binary(sample) {
        return Err(IngestError::Unsupported(
            "binary content (not PDF, Markdown, HTML or text)".into(),
        ));
    }
    let ext = name
        .and_then(|n| n.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase());
    let lower = String::from_utf8_lossy(sample).to_ascii_lowercase();
    let trimmed = lower.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with("<!doctype html")
        || trimmed.starts_with("<html")
        || (trimmed.starts_with('<') && (lower.contains("<body") || lower.contains("<head")))
        || (matches!(ext.as_deref(), Some("html" | "htm" | "xhtml")) && trimmed.starts_with('<'))
    {
        return Ok(MediaType::Html);
    }
    match ext.as_deref() {
        Some("md" | "markdown" | "mdx") => Ok(MediaType::Markdown),
        Some("txt" | "text" | "log" | "csv") => Ok(MediaType::Text),
        _ if looks_like_markdown(&lower) => Ok(MediaType::Markdown),
        _ => Ok(MediaType::Text),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// NUL bytes or a high share of control characters mean binary data.
fn looks_binary(sample: &[u8]) -> bool {
    if sample.contains(&0) {
        return true;
    }
    let control = sample
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0C))
        .count();
    !sample.is_empty() && control * 20 > sample.len()
}

fn looks_like_markdown(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("# ") || l.starts_with("## ") || l.starts_with("```")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_beats_the_name() {
        assert_eq!(
            detect(b"%PDF-1.7\n...", Some("notes.txt")),
            Ok(MediaType::Pdf)
        );
        assert_eq!(
            detect(b"<!DOCTYPE html><html><body>x</body></html>", Some("a.txt")),
            Ok(MediaType::Html)
        );
    }

    #[test]
    fn markdown_by_name_or_shape() {
        assert_eq!(
            detect(b"plain words", Some("a.md")),
            Ok(MediaType::Markdown)
        );
        assert_eq!(detect(b"# Title\n\nbody", None), Ok(MediaType::Markdown));
        assert_eq!(detect(b"just some text", None), Ok(MediaType::Text));
    }

    #[test]
    fn binaries_are_refused_with_a_reason() {
        let err = detect(b"\x89PNG\r\n\x1a\n....", Some("x.pdf")).expect_err("png");
        assert!(err.to_string().contains("PNG"));
        assert!(detect(b"ab\0cd", None).is_err());
    }

    #[test]
    fn utf16_text_is_not_binary() {
        let bytes: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("hi".encode_utf16().flat_map(|u| u.to_le_bytes()))
            .collect();
        assert_eq!(detect(&bytes, None), Ok(MediaType::Text));
    }
}
