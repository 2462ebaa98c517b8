//! Media-type detection from content first, file name second.

use serde::{Deserialize, Serialize};

use super::IngestError;

/// The document types Groundwork reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaType {
    /// `application/pdf`.
    Pdf,
    /// `text/markdown`.
    Markdown,
    /// `text/html`.
    Html,
    /// `text/plain` (and any other UTF-8 text).
    Text,
    /// `text/csv` (and tab-separated values).
    Csv,
    /// `application/rtf`.
    Rtf,
    /// Word document (Office Open XML).
    Docx,
    /// PowerPoint presentation (Office Open XML).
    Pptx,
    /// Excel workbook (Office Open XML).
    Xlsx,
    /// OpenDocument spreadsheet.
    Ods,
    /// OpenDocument text.
    Odt,
    /// EPUB e-book.
    Epub,
    /// PNG image (read by OCR).
    Png,
    /// JPEG image (read by OCR).
    Jpeg,
    /// TIFF image, one page or many (read by OCR).
    Tiff,
}

impl MediaType {
    /// The IANA media type string.
    pub fn mime(self) -> &'static str {
        match self {
            MediaType::Pdf => "application/pdf",
            MediaType::Markdown => "text/markdown",
            MediaType::Html => "text/html",
            MediaType::Text => "text/plain",
            MediaType::Csv => "text/csv",
            MediaType::Rtf => "application/rtf",
            MediaType::Docx => {
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            }
            MediaType::Pptx => {
                "application/vnd.openxmlformats-officedocument.presentationml.presentation"
            }
            MediaType::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            MediaType::Ods => "application/vnd.oasis.opendocument.spreadsheet",
            MediaType::Odt => "application/vnd.oasis.opendocument.text",
            MediaType::Epub => "application/epub+zip",
            MediaType::Png => "image/png",
            MediaType::Jpeg => "image/jpeg",
            MediaType::Tiff => "image/tiff",
        }
    }

    /// Whether its bytes are parsed in the isolated extractor process (binary formats, whose
    /// parsers must not run in the service).
    pub fn is_isolated(self) -> bool {
        !matches!(
            self,
            MediaType::Markdown
                | MediaType::Html
                | MediaType::Text
                | MediaType::Csv
                | MediaType::Rtf
        )
    }

    /// Whether it is an image, whose only text is what OCR reads.
    pub fn is_image(self) -> bool {
        matches!(self, MediaType::Png | MediaType::Jpeg | MediaType::Tiff)
    }
}

/// Images read by OCR, by their first bytes.
const IMAGE_MAGIC: &[(&[u8], MediaType)] = &[
    (b"\x89PNG\r\n\x1a\n", MediaType::Png),
    (b"\xFF\xD8\xFF", MediaType::Jpeg),
    (b"II*\0", MediaType::Tiff),
    (b"MM\0*", MediaType::Tiff),
];

/// Refuses an image whose header cannot describe a picture (truncated, zero-sized): it would
/// only fail later, in OCR, with a less useful reason.
fn image_header(bytes: &[u8], kind: MediaType) -> Result<(), IngestError> {
    let u32_be = |i: usize| {
        bytes
            .get(i..i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let problem = match kind {
        // Signature, IHDR chunk (length 13, width and height non-zero), an IEND chunk.
        MediaType::Png => match (u32_be(8), bytes.get(12..16), u32_be(16), u32_be(20)) {
            (Some(13), Some(b"IHDR"), Some(w), Some(h)) if w > 0 && h > 0 && bytes.len() >= 57 => {
                None
            }
            _ => Some("a truncated or damaged PNG image (no complete IHDR header)"),
        },
        MediaType::Jpeg if bytes.len() < 125 => Some("a truncated JPEG image"),
        MediaType::Tiff => {
            let offset = if bytes.starts_with(b"II") {
                bytes
                    .get(4..8)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            } else {
                u32_be(4)
            };
            match offset {
                Some(o) if o >= 8 && (o as usize) < bytes.len() => None,
                _ => Some("a truncated or damaged TIFF image (no image directory)"),
            }
        }
        _ => None,
    };
    match problem {
        Some(p) => Err(IngestError::Unsupported(p.into())),
        None => Ok(()),
    }
}

/// What a ZIP archive is, by its `mimetype` entry (OpenDocument, EPUB) or the entries it
/// names (Office Open XML). Reads only the first local header and searches entry names in the
/// first 256 KiB and the last 1 MiB (where the central directory is); inflates nothing.
fn zip_kind(bytes: &[u8]) -> Result<MediaType, IngestError> {
    let u16_at = |i: usize| {
        bytes
            .get(i..i + 2)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
    };
    if bytes.get(30..38) == Some(b"mimetype") {
        let data = 30 + 8 + u16_at(28) as usize;
        let declared = bytes.get(data..(data + 80).min(bytes.len())).unwrap_or(&[]);
        let declared = String::from_utf8_lossy(declared);
        for (mime, kind) in [
            ("application/vnd.oasis.opendocument.text", MediaType::Odt),
            (
                "application/vnd.oasis.opendocument.spreadsheet",
                MediaType::Ods,
            ),
            ("application/epub+zip", MediaType::Epub),
        ] {
            if declared.starts_with(mime) && !declared[mime.len()..].starts_with('-') {
                return Ok(kind);
            }
        }
    }
    let head = &bytes[..bytes.len().min(256 << 10)];
    let tail = &bytes[bytes.len().saturating_sub(1 << 20)..];
    for (entry, kind) in [
        (&b"word/document.xml"[..], MediaType::Docx),
        (b"ppt/presentation.xml", MediaType::Pptx),
        (b"xl/workbook.xml", MediaType::Xlsx),
    ] {
        if find(head, entry).is_some() || find(tail, entry).is_some() {
            return Ok(kind);
        }
    }
    Err(IngestError::Unsupported(
        "a ZIP archive that is not a document Groundwork reads (DOCX, PPTX, XLSX, ODT, ODS, \
         EPUB)"
            .into(),
    ))
}

const BINARY_MAGIC: &[(&[u8], &str)] = &[
    (b"\x89PNG", "PNG image"),
    (b"\xFF\xD8\xFF", "JPEG image"),
    (b"GIF8", "GIF image (OCR reads PNG, JPEG and TIFF)"),
    (b"PK\x03\x04", "ZIP archive"),
    (
        b"\xD0\xCF\x11\xE0",
        "legacy Office binary file (.doc/.xls/.ppt; save it as .docx/.xlsx/.pptx) or a \
         password-protected Office file (remove the password)",
    ),
    (b"\x1F\x8B", "gzip archive"),
    (b"\x7FELF", "executable"),
    (b"7z\xBC\xAF", "7z archive"),
    (b"Rar!", "RAR archive"),
];

/// Decides the media type of `bytes`. The content decides where it can (a PDF named `.txt` is a
/// PDF); the file name only separates Markdown from plain text, which content cannot always do.
pub fn detect(bytes: &[u8], name: Option<&str>) -> Result<MediaType, IngestError> {
    detect_declared(bytes, name, None)
}

/// [`detect`], with the media type the client declared (a multipart part's `Content-Type`).
/// A file named `.pdf` or declared `application/pdf` whose bytes are not a PDF is refused:
/// indexed as text it would fill the index with whatever it holds.
pub fn detect_declared(
    bytes: &[u8],
    name: Option<&str>,
    declared: Option<&str>,
) -> Result<MediaType, IngestError> {
    let head = &bytes[..bytes.len().min(1024)];
    if find(head, b"%PDF-").is_some() {
        return Ok(MediaType::Pdf);
    }
    let named_pdf = name
        .and_then(|n| n.rsplit_once('.'))
        .is_some_and(|(_, e)| e.eq_ignore_ascii_case("pdf"));
    let declared = declared.map(essence);
    let declared_pdf = matches!(
        declared.as_deref(),
        Some("application/pdf" | "application/x-pdf")
    );
    if !named_pdf && !declared_pdf {
        if let Some((_, kind)) = IMAGE_MAGIC.iter().find(|(m, _)| bytes.starts_with(m)) {
            return image_header(bytes, *kind).map(|()| *kind);
        }
        if bytes.starts_with(b"PK\x03\x04") {
            return zip_kind(bytes);
        }
    }
    if named_pdf || declared_pdf {
        let how = if declared_pdf { "declared" } else { "named" };
        return Err(IngestError::Unsupported(
            match BINARY_MAGIC.iter().find(|(m, _)| bytes.starts_with(m)) {
                Some((_, what)) => format!("{how} as a PDF but is a {what}"),
                None => format!(
                    "{how} as a PDF but is not one (no `%PDF-` header in its first 1,024 bytes)"
                ),
            },
        ));
    }
    let utf16 = bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF");
    if !utf16 {
        if let Some(at) = bytes.iter().position(|&b| not_text(b)) {
            // Every one of these formats has such a byte within its first few bytes; the magic
            // only names what was sent (a text that happens to begin `Rar!` is still text).
            if let Some((_, what)) = BINARY_MAGIC.iter().find(|(m, _)| bytes.starts_with(m)) {
                return Err(IngestError::Unsupported(format!(
                    "{what} is not a text document"
                )));
            }
            return Err(IngestError::Unsupported(format!(
                "binary content: control byte {:#04x} at offset {at} (text may hold tabs, \
                 line breaks, form feeds, SUB and ESC, no other control characters)",
                bytes[at]
            )));
        }
    }
    let sample = &bytes[..bytes.len().min(8192)];
    let start = String::from_utf8_lossy(&sample[..sample.len().min(64)]).into_owned();
    if start
        .trim_start_matches('\u{feff}')
        .trim_start()
        .starts_with("{\\rtf")
    {
        return Ok(MediaType::Rtf);
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
        Some("csv" | "tsv") => Ok(MediaType::Csv),
        _ if matches!(
            declared.as_deref(),
            Some("text/csv" | "text/tab-separated-values")
        ) =>
        {
            Ok(MediaType::Csv)
        }
        Some("txt" | "text" | "log") => Ok(MediaType::Text),
        _ if looks_like_markdown(&lower) => Ok(MediaType::Markdown),
        _ => Ok(MediaType::Text),
    }
}

/// A declared media type without its parameters, lower-cased (`Text/CSV; charset=x` → `text/csv`).
fn essence(declared: &str) -> String {
    declared
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The control bytes no text document holds: C0 controls other than tab, line feed, vertical
/// tab, form feed, carriage return, SUB (an old end-of-file mark) and ESC (terminal colours in
/// logs). One of them anywhere makes the document binary: the rule the API document states
/// as a pattern, so it must stay exact rather than a share of a sample.
const fn not_text(b: u8) -> bool {
    matches!(b, 0x00..=0x08 | 0x0E..=0x19 | 0x1C..=0x1F)
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
    fn a_pdf_by_name_or_declaration_must_be_a_pdf() {
        let refused = |r: Result<MediaType, IngestError>| match r {
            Err(IngestError::Unsupported(m)) => m,
            other => panic!("not refused: {other:?}"),
        };
        assert!(refused(detect(b"just words", Some("report.PDF"))).contains("named as a PDF"));
        assert!(refused(detect_declared(
            b"just words",
            Some("report"),
            Some("application/pdf; name=x")
        ))
        .contains("declared as a PDF"));
        assert_eq!(
            detect_declared(b"junk\n%PDF-1.4\n", Some("a.pdf"), Some("application/pdf")),
            Ok(MediaType::Pdf)
        );
        assert_eq!(
            detect_declared(b"# Title", Some("a.md"), Some("application/octet-stream")),
            Ok(MediaType::Markdown)
        );
    }

    #[test]
    fn office_files_images_rtf_and_csv_are_recognised() {
        let mut odt = b"PK\x03\x04".to_vec();
        odt.resize(26, 0);
        odt.extend([8, 0, 0, 0]);
        odt.extend(b"mimetypeapplication/vnd.oasis.opendocument.text");
        assert_eq!(detect(&odt, Some("x.bin")), Ok(MediaType::Odt));
        let mut docx = b"PK\x03\x04".to_vec();
        docx.extend([0u8; 40]);
        docx.extend(b"word/document.xml");
        assert_eq!(detect(&docx, None), Ok(MediaType::Docx));
        let zip = b"PK\x03\x04\0\0\0\0 other entries";
        assert!(detect(zip, Some("a.docx"))
            .expect_err("zip")
            .to_string()
            .contains("ZIP"));
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\0\x10\0\0\0\x10".to_vec();
        png.resize(80, 0);
        assert_eq!(detect(&png, None), Ok(MediaType::Png));
        let truncated = detect(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", None).expect_err("short");
        assert!(truncated.to_string().contains("truncated"), "{truncated}");
        assert_eq!(detect(b"II*\0\x08\0\0\0\0\0", None), Ok(MediaType::Tiff));
        assert!(detect(b"II*\0\xff\0\0\0", None).is_err());
        assert_eq!(detect(b"{\\rtf1\\ansi hi}", None), Ok(MediaType::Rtf));
        assert_eq!(detect(b"a,b\n1,2", Some("t.csv")), Ok(MediaType::Csv));
        assert_eq!(
            detect_declared(b"a,b\n1,2", Some("t"), Some("text/csv")),
            Ok(MediaType::Csv)
        );
        let doc = detect(b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1\0", Some("a.doc"));
        assert!(doc.expect_err("doc").to_string().contains(".docx"));
    }

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
        let err = detect(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", Some("x.pdf")).expect_err("png");
        assert!(err.to_string().contains("PNG"));
        assert!(detect(b"ab\0cd", None).is_err());
        let err = detect(b"a long text with one stray \x01 byte", None).expect_err("SOH");
        assert!(err.to_string().contains("0x01 at offset 27"), "{err}");
    }

    #[test]
    fn text_may_hold_layout_controls() {
        assert_eq!(detect(b"Rar! is a greeting", None), Ok(MediaType::Text));
        let text = b"col\tcol\r\nline\x0bpage\x0cnext \x1b[1mbold\x1b[0m\n\x1a";
        assert_eq!(detect(text, Some("a.txt")), Ok(MediaType::Text));
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
