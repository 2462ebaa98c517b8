//! Office and e-book formats: DOCX, PPTX, XLSX, ODS, ODT and EPUB, read from their ZIP
//! archives with bounded inflation and an XML reader that never expands entities it was not
//! born with (no DTDs: billion-laughs documents read as their literal text).
//!
//! Runs only inside the isolated extractor process ([`super::isolate`]), under its time and
//! memory bounds; must never be called on uploaded bytes in the service process.

mod docx;
mod epub;
mod odt;
mod pptx;
mod sheet;
mod xml;

use std::io::{Cursor, Read};

use super::builder::Built;
use super::detect::MediaType;
use super::extracted::Extracted;
use super::IngestError;

/// Most entries an archive may list.
const MAX_ENTRIES: usize = 20_000;
/// Most bytes one entry may inflate to.
const MAX_ENTRY_BYTES: u64 = 256 << 20;
/// Most bytes all entries read from one archive may inflate to.
const MAX_TOTAL_BYTES: u64 = 512 << 20;

/// Extracts an Office or e-book document.
pub fn extract(media_type: MediaType, bytes: &[u8]) -> Result<Extracted, IngestError> {
    let (built, warnings) = match media_type {
        MediaType::Docx => (docx::extract(&mut Archive::open(bytes, "DOCX")?)?, vec![]),
        MediaType::Pptx => (pptx::extract(&mut Archive::open(bytes, "PPTX")?)?, vec![]),
        MediaType::Odt => (odt::extract(&mut Archive::open(bytes, "ODT")?)?, vec![]),
        MediaType::Epub => (epub::extract(&mut Archive::open(bytes, "EPUB")?)?, vec![]),
        MediaType::Xlsx | MediaType::Ods => {
            // Checked with the same bounds before calamine inflates anything itself.
            Archive::open(bytes, "spreadsheet")?.check_sizes()?;
            sheet::extract(bytes)?
        }
        other => {
            return Err(IngestError::Unsupported(format!(
                "{} is not an Office or e-book format",
                other.mime()
            )))
        }
    };
    let mut e = Extracted::plain(media_type, built.text, engine(media_type));
    e.headings = built.headings;
    e.page_starts = built.page_starts;
    e.tables = built.tables;
    e.warnings = warnings;
    Ok(e)
}

fn engine(media_type: MediaType) -> &'static str {
    match media_type {
        MediaType::Docx => "docx",
        MediaType::Pptx => "pptx",
        MediaType::Odt => "odt",
        MediaType::Epub => "epub",
        _ => "calamine",
    }
}

/// A ZIP archive read within bounds: entry count, bytes per entry, bytes in all.
pub(crate) struct Archive<'a> {
    zip: zip::ZipArchive<Cursor<&'a [u8]>>,
    kind: &'static str,
    inflated: u64,
}

impl<'a> Archive<'a> {
    fn open(bytes: &'a [u8], kind: &'static str) -> Result<Self, IngestError> {
        let zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| IngestError::Malformed {
            kind,
            detail: format!("unreadable ZIP archive: {e}"),
        })?;
        if zip.len() > MAX_ENTRIES {
            return Err(IngestError::Malformed {
                kind,
                detail: format!(
                    "the archive lists {} entries (at most {MAX_ENTRIES})",
                    zip.len()
                ),
            });
        }
        Ok(Self {
            zip,
            kind,
            inflated: 0,
        })
    }

    fn malformed(&self, detail: String) -> IngestError {
        malformed(self.kind, detail)
    }

    /// Refuses an archive whose entries declare more than the bounds, or inflate more than
    /// 1,000-fold (the signature of a ZIP bomb).
    fn check_sizes(&mut self) -> Result<(), IngestError> {
        let mut total = 0u64;
        for i in 0..self.zip.len() {
            let kind = self.kind;
            let entry = self
                .zip
                .by_index_raw(i)
                .map_err(|e| malformed(kind, format!("entry {i}: {e}")))?;
            let (size, packed) = (entry.size(), entry.compressed_size());
            let name = entry.name().unwrap_or_default().into_owned();
            drop(entry);
            total = total.saturating_add(size);
            if size > MAX_ENTRY_BYTES || total > MAX_TOTAL_BYTES {
                return Err(self.bomb(&name));
            }
            if size > (1 << 20) && size / packed.max(1) > 1_000 {
                return Err(self.bomb(&name));
            }
        }
        Ok(())
    }

    fn bomb(&self, name: &str) -> IngestError {
        self.malformed(format!(
            "entry `{name}` inflates past the bounds ({} MiB per entry, {} MiB in all): \
             refused as a ZIP bomb",
            MAX_ENTRY_BYTES >> 20,
            MAX_TOTAL_BYTES >> 20
        ))
    }

    /// The entry `name` as text, `None` when absent. Inflation stops at the bounds, whatever
    /// the entry's header claims.
    fn text(&mut self, name: &str) -> Result<Option<String>, IngestError> {
        let budget = MAX_ENTRY_BYTES.min(MAX_TOTAL_BYTES.saturating_sub(self.inflated));
        let mut buf = Vec::new();
        let kind = self.kind;
        let read = match self.zip.by_name(name) {
            Ok(entry) => entry.take(budget + 1).read_to_end(&mut buf),
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(malformed(kind, format!("entry `{name}`: {e}"))),
        };
        read.map_err(|e| self.malformed(format!("entry `{name}`: {e}")))?;
        self.inflated += buf.len() as u64;
        if buf.len() as u64 > budget {
            return Err(self.bomb(name));
        }
        Ok(Some(match String::from_utf8(buf) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }))
    }

    /// The entry `name` as text; its absence is a malformed document.
    fn required(&mut self, name: &str) -> Result<String, IngestError> {
        self.text(name)?
            .ok_or_else(|| self.malformed(format!("the archive has no `{name}`")))
    }
}

fn malformed(kind: &'static str, detail: String) -> IngestError {
    IngestError::Malformed { kind, detail }
}

/// `target` of a relationship, resolved against the folder of the part `source`
/// (`ppt/slides/slide1.xml` + `../notesSlides/n1.xml` → `ppt/notesSlides/n1.xml`).
fn resolve(source: &str, target: &str) -> String {
    if let Some(absolute) = target.strip_prefix('/') {
        return absolute.to_owned();
    }
    let mut parts: Vec<&str> = source.split('/').collect();
    parts.pop();
    for piece in target.split('/') {
        match piece {
            ".." => {
                parts.pop();
            }
            "." | "" => {}
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Reads a `.rels` part: relationship id → (type, target resolved against `source`).
fn relationships(
    archive: &mut Archive<'_>,
    source: &str,
) -> Result<Vec<(String, String, String)>, IngestError> {
    let (dir, file) = source.rsplit_once('/').unwrap_or(("", source));
    let rels_name = if dir.is_empty() {
        format!("_rels/{file}.rels")
    } else {
        format!("{dir}/_rels/{file}.rels")
    };
    let Some(rels) = archive.text(&rels_name)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    xml::walk(&rels, archive.kind, |event| {
        if let xml::Event::Open(tag) = event {
            if tag.name == "Relationship" {
                if let (Some(id), Some(target)) = (tag.attr("Id"), tag.attr("Target")) {
                    let kind = tag.attr("Type").unwrap_or_default().to_owned();
                    out.push((id.to_owned(), kind, resolve(source, target)));
                }
            }
        }
    })?;
    Ok(out)
}

/// A finished reader's output when it found no text at all.
fn nonempty(built: Built) -> Result<Built, IngestError> {
    if built.text.trim().is_empty() {
        return Err(IngestError::NoText);
    }
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    pub(super) fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        let mut w = zip::ZipWriter::new(&mut out);
        for (name, data) in entries {
            w.start_file(*name, zip::write::SimpleFileOptions::default())
                .expect("entry");
            w.write_all(data).expect("write");
        }
        w.finish().expect("finish");
        out.into_inner()
    }

    #[test]
    fn relationship_targets_resolve_against_their_part() {
        assert_eq!(
            resolve("ppt/slides/slide1.xml", "../notesSlides/notesSlide1.xml"),
            "ppt/notesSlides/notesSlide1.xml"
        );
        assert_eq!(
            resolve("ppt/presentation.xml", "slides/slide2.xml"),
            "ppt/slides/slide2.xml"
        );
        assert_eq!(resolve("x/y.xml", "/word/a.xml"), "word/a.xml");
    }

    #[test]
    fn a_zip_bomb_is_refused_within_bounds() {
        let zeros = vec![0u8; (MAX_ENTRY_BYTES + 10) as usize];
        let bytes = zip_of(&[("word/document.xml", &zeros)]);
        assert!(bytes.len() < 2 << 20, "the bomb is small: {}", bytes.len());
        let err = extract(MediaType::Docx, &bytes).expect_err("bomb");
        assert!(err.to_string().contains("ZIP bomb"), "{err}");
        let err = extract(MediaType::Xlsx, &bytes).expect_err("bomb");
        assert!(err.to_string().contains("ZIP bomb"), "{err}");
    }

    #[test]
    fn docx_text_boxes_and_footnotes_are_kept() {
        let w = r#"xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main""#;
        let body = format!(
            "<w:document {w}><w:body><w:p><w:r><w:t>Before the box, </w:t></w:r><w:r><w:pict>\
             <w:txbxContent><w:p><w:r><w:t>Inside the box.</w:t></w:r></w:p></w:txbxContent>\
             </w:pict></w:r><mc:AlternateContent><mc:Choice><w:r><w:t>Shape text. </w:t>\
             </w:r></mc:Choice><mc:Fallback><w:r><w:t>Shape text. </w:t></w:r></mc:Fallback>\
             </mc:AlternateContent><w:r><w:t>after the box.</w:t></w:r></w:p>\
             <w:p><w:r><w:delText>deleted</w:delText><w:instrText>PAGE</w:instrText>\
             <w:t>Kept.</w:t></w:r></w:p></w:body></w:document>"
        );
        let notes = format!(
            "<w:footnotes {w}><w:footnote w:id=\"1\"><w:p><w:r><w:t>A footnote.</w:t></w:r>\
             </w:p></w:footnote></w:footnotes>"
        );
        let bytes = zip_of(&[
            ("word/document.xml", body.as_bytes()),
            ("word/footnotes.xml", notes.as_bytes()),
        ]);
        let e = extract(MediaType::Docx, &bytes).expect("docx");
        assert_eq!(
            e.text,
            "Inside the box.\n\nBefore the box, Shape text. after the box.\n\nKept.\n\nA footnote."
        );
    }

    #[test]
    fn missing_parts_and_garbage_are_malformed() {
        let err = extract(MediaType::Docx, b"PK\x03\x04 not really").expect_err("garbage");
        assert_eq!(err.code(), "malformed");
        let err = extract(MediaType::Docx, &zip_of(&[("a.txt", b"x")])).expect_err("no body");
        assert!(err.to_string().contains("word/document.xml"), "{err}");
    }
}
