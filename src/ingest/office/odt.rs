//! ODT (OpenDocument text): headings with their outline levels, paragraphs, lists, tables
//! (header rows from `table:table-header-rows`, else the first row). Annotations and notes'
//! citations are skipped.

use super::super::builder::{Builder, Built};
use super::xml::{self, Event};
use super::{nonempty, Archive, IngestError};

/// Reads `content.xml`.
pub fn extract(archive: &mut Archive<'_>) -> Result<Built, IngestError> {
    let content = archive.required("content.xml")?;
    let mut b = Builder::new();
    // Open paragraphs/headings: (outline level for a heading, text so far).
    let mut blocks: Vec<(Option<u8>, String)> = Vec::new();
    let mut tables: Vec<(Vec<Vec<String>>, Vec<String>, String)> = Vec::new();
    let mut hidden = 0usize;
    xml::walk(&content, "ODT", |event| match event {
        Event::Open(t) => match t.name.as_str() {
            "h" => {
                let level = t
                    .attr("outline-level")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(1);
                blocks.push((Some(level), String::new()));
            }
            "p" => blocks.push((None, String::new())),
            "s" => {
                if let Some((_, text)) = blocks.last_mut() {
                    let n = t.attr("c").and_then(|c| c.parse().ok()).unwrap_or(1usize);
                    text.push_str(&" ".repeat(n.min(64)));
                }
            }
            "tab" => {
                if let Some((_, text)) = blocks.last_mut() {
                    text.push('\t');
                }
            }
            "line-break" => {
                if let Some((_, text)) = blocks.last_mut() {
                    text.push('\n');
                }
            }
            "table" => tables.push((Vec::new(), Vec::new(), String::new())),
            "annotation" | "note-citation" | "tracked-changes" => hidden += 1,
            _ => {}
        },
        Event::Text(s) => {
            if hidden == 0 {
                if let Some((_, text)) = blocks.last_mut() {
                    text.push_str(s);
                }
            }
        }
        Event::Close(name) => match name {
            "h" | "p" => {
                let Some((level, text)) = blocks.pop() else {
                    return;
                };
                if let Some((_, outer)) = blocks.last_mut() {
                    // A paragraph inside another (a note's body): its text joins the outer one.
                    outer.push(' ');
                    outer.push_str(text.trim());
                } else if let Some((_, _, cell)) = tables.last_mut() {
                    if !cell.is_empty() {
                        cell.push(' ');
                    }
                    cell.push_str(text.trim());
                } else {
                    match level {
                        Some(level) => b.heading(level, &text),
                        None => b.paragraph(&text),
                    }
                }
            }
            "table-cell" => {
                if let Some((_, row, cell)) = tables.last_mut() {
                    row.push(std::mem::take(cell));
                }
            }
            "table-row" => {
                if let Some((rows, row, _)) = tables.last_mut() {
                    rows.push(std::mem::take(row));
                }
            }
            "table" => {
                if let Some((rows, _, _)) = tables.pop() {
                    match tables.last_mut() {
                        Some((_, _, cell)) => {
                            for row in rows {
                                cell.push(' ');
                                cell.push_str(&row.join(" "));
                            }
                        }
                        None => b.table(None, &rows, true),
                    }
                }
            }
            "annotation" | "note-citation" | "tracked-changes" => hidden = hidden.saturating_sub(1),
            _ => {}
        },
    })?;
    nonempty(b.finish())
}
