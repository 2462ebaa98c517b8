//! DOCX (Word): paragraphs in order, headings from paragraph styles (by style name or outline
//! level, so localised style ids work), tables with their first row as header, text boxes,
//! footnotes and endnotes. Deleted text, field codes and the fallback copy of drawings
//! (`mc:Fallback`) are skipped.

use std::collections::HashMap;

use super::super::builder::{Builder, Built};
use super::xml::{self, Event};
use super::{nonempty, Archive, IngestError};

/// Reads `word/document.xml`, then the footnotes and endnotes (and `word/styles.xml` for
/// heading levels).
pub fn extract(archive: &mut Archive<'_>) -> Result<Built, IngestError> {
    let levels = match archive.text("word/styles.xml")? {
        Some(styles) => heading_levels(&styles)?,
        None => HashMap::new(),
    };
    let body = archive.required("word/document.xml")?;
    let mut b = Builder::new();
    let mut reader = Body::default();
    xml::walk(&body, "DOCX", |event| reader.event(event, &levels, &mut b))?;
    for part in ["word/footnotes.xml", "word/endnotes.xml"] {
        if let Some(notes) = archive.text(part)? {
            let mut reader = Body::default();
            xml::walk(&notes, "DOCX", |event| reader.event(event, &levels, &mut b))?;
        }
    }
    nonempty(b.finish())
}

/// Style id → heading level, for styles named `heading N` / `Title` or with an outline level.
fn heading_levels(styles: &str) -> Result<HashMap<String, u8>, IngestError> {
    let mut out = HashMap::new();
    let mut current: Option<String> = None;
    xml::walk(styles, "DOCX", |event| match event {
        Event::Open(t) if t.name == "style" => current = t.attr("styleId").map(str::to_owned),
        Event::Open(t) if t.name == "name" => {
            if let (Some(id), Some(name)) = (&current, t.attr("val")) {
                let name = name.to_ascii_lowercase();
                if name == "title" {
                    out.insert(id.clone(), 1);
                } else if let Some(n) = name.strip_prefix("heading ") {
                    if let Ok(n) = n.trim().parse::<u8>() {
                        out.insert(id.clone(), n.clamp(1, 6));
                    }
                }
            }
        }
        Event::Open(t) if t.name == "outlineLvl" => {
            if let (Some(id), Some(n)) =
                (&current, t.attr("val").and_then(|v| v.parse::<u8>().ok()))
            {
                if n < 9 {
                    out.entry(id.clone()).or_insert((n + 1).min(6));
                }
            }
        }
        Event::Close("style") => current = None,
        _ => {}
    })?;
    Ok(out)
}

#[derive(Default)]
struct TableState {
    rows: Vec<Vec<String>>,
    row: Vec<String>,
    cell: String,
}

#[derive(Default)]
struct Body {
    /// Open elements' local names.
    open: Vec<String>,
    /// Open paragraphs (a text box's paragraphs sit inside another's run): text and style.
    paras: Vec<(String, Option<String>)>,
    tables: Vec<TableState>,
    /// Inside deleted text or a field code: its text is not the document's.
    hidden: usize,
}

impl Body {
    fn event(&mut self, event: Event<'_>, levels: &HashMap<String, u8>, b: &mut Builder) {
        match event {
            Event::Open(t) => {
                match t.name.as_str() {
                    "p" => self.paras.push((String::new(), None)),
                    "pStyle" => {
                        if let Some((_, style)) = self.paras.last_mut() {
                            *style = t.attr("val").map(str::to_owned);
                        }
                    }
                    "tab" if self.in_run() => self.push('\t'),
                    "br" | "cr" if self.in_run() => self.push('\n'),
                    "tbl" => self.tables.push(TableState::default()),
                    "tr" => {
                        if let Some(t) = self.tables.last_mut() {
                            t.row.clear();
                        }
                    }
                    "tc" => {
                        if let Some(t) = self.tables.last_mut() {
                            t.cell.clear();
                        }
                    }
                    // `mc:Fallback` repeats its `mc:Choice` (a text box drawn twice).
                    "del" | "instrText" | "delText" | "Fallback" => self.hidden += 1,
                    _ => {}
                }
                self.open.push(t.name.clone());
            }
            Event::Text(text) => {
                if self.hidden == 0 && self.open.last().is_some_and(|n| n == "t") {
                    if let Some((para, _)) = self.paras.last_mut() {
                        para.push_str(text);
                    }
                }
            }
            Event::Close(name) => {
                self.open.pop();
                match name {
                    "p" => self.end_paragraph(levels, b),
                    "tc" => {
                        if let Some(t) = self.tables.last_mut() {
                            let cell = std::mem::take(&mut t.cell);
                            t.row.push(cell.trim().to_owned());
                        }
                    }
                    "tr" => {
                        if let Some(t) = self.tables.last_mut() {
                            let row = std::mem::take(&mut t.row);
                            t.rows.push(row);
                        }
                    }
                    "tbl" => {
                        if let Some(done) = self.tables.pop() {
                            match self.tables.last_mut() {
                                // A nested table's rows become text of the enclosing cell.
                                Some(outer) => {
                                    for row in done.rows {
                                        outer.cell.push(' ');
                                        outer.cell.push_str(&row.join(" "));
                                    }
                                }
                                None => b.table(None, &done.rows, true),
                            }
                        }
                    }
                    "del" | "instrText" | "delText" | "Fallback" => {
                        self.hidden = self.hidden.saturating_sub(1)
                    }
                    _ => {}
                }
            }
        }
    }

    fn in_run(&self) -> bool {
        self.hidden == 0
    }

    fn push(&mut self, c: char) {
        if let Some((para, _)) = self.paras.last_mut() {
            para.push(c);
        }
    }

    fn end_paragraph(&mut self, levels: &HashMap<String, u8>, b: &mut Builder) {
        let Some((text, style)) = self.paras.pop() else {
            return;
        };
        if let Some(table) = self.tables.last_mut() {
            if !text.trim().is_empty() {
                if !table.cell.is_empty() {
                    table.cell.push(' ');
                }
                table.cell.push_str(text.trim());
            }
            return;
        }
        match style.as_ref().and_then(|s| levels.get(s)) {
            Some(&level) => b.heading(level, &text),
            None => b.paragraph(&text),
        }
    }
}
