//! EPUB: the chapters of the spine in reading order, each read as HTML (headings and tables
//! kept); a chapter without a heading of its own is headed by its file name, so every passage
//! cites its chapter. The navigation document is not a chapter.

use std::collections::HashMap;

use super::super::builder::{Builder, Built};
use super::super::html;
use super::xml::{self, Event};
use super::{nonempty, resolve, Archive, IngestError};

/// Reads `META-INF/container.xml`, the package document it names, and the spine's chapters.
pub fn extract(archive: &mut Archive<'_>) -> Result<Built, IngestError> {
    let container = archive.required("META-INF/container.xml")?;
    let mut package = None;
    xml::walk(&container, "EPUB", |event| {
        if let Event::Open(t) = event {
            if t.name == "rootfile" && package.is_none() {
                package = t.attr("full-path").map(str::to_owned);
            }
        }
    })?;
    let package =
        package.ok_or_else(|| archive.malformed("container.xml names no package".into()))?;
    let opf = archive.required(&package)?;
    let mut manifest: HashMap<String, String> = HashMap::new();
    let mut spine: Vec<String> = Vec::new();
    let mut title = String::new();
    let mut in_title = false;
    xml::walk(&opf, "EPUB", |event| match event {
        Event::Open(t) if t.name == "item" => {
            // The EPUB 3 navigation document repeats the table of contents: not a chapter.
            let nav = t
                .attr("properties")
                .is_some_and(|p| p.split_whitespace().any(|p| p == "nav"));
            if let (Some(id), Some(href), false) = (t.attr("id"), t.attr("href"), nav) {
                manifest.insert(id.to_owned(), resolve(&package, href));
            }
        }
        Event::Open(t) if t.name == "itemref" => {
            if t.attr("linear") != Some("no") {
                spine.extend(t.attr("idref").map(str::to_owned));
            }
        }
        Event::Open(t) => in_title = t.name == "title",
        Event::Text(s) if in_title => title.push_str(s),
        Event::Text(_) => {}
        Event::Close(_) => in_title = false,
    })?;
    let mut b = Builder::new();
    if !title.trim().is_empty() {
        b.heading(1, &title);
    }
    for id in spine {
        let Some(path) = manifest.get(&id).cloned() else {
            continue;
        };
        let path = percent_decode(&path);
        let Some(chapter) = archive.text(&path)? else {
            continue;
        };
        let built = html::extract(&chapter);
        if built.text.trim().is_empty() {
            continue;
        }
        if built.headings.is_empty() {
            let name = path.rsplit('/').next().unwrap_or(&path);
            b.heading(2, name.rsplit_once('.').map_or(name, |(stem, _)| stem));
        }
        b.append(built);
    }
    nonempty(b.finish())
}

/// `%20` and friends in manifest hrefs, as the archive stores the names unescaped.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
