//! PPTX (PowerPoint): slide by slide in presentation order, each slide a page headed by its
//! title, with its text boxes, tables and speaker notes.

use super::super::builder::{Builder, Built};
use super::xml::{self, Event};
use super::{nonempty, relationships, Archive, IngestError};

/// What a slide (or notes page) holds, in order.
enum Item {
    /// A paragraph of a shape, with the shape's placeholder type (`title`, `body`…).
    Para {
        placeholder: Option<String>,
        text: String,
    },
    /// A table's rows.
    Table(Vec<Vec<String>>),
}

/// Reads the slides listed by `ppt/presentation.xml`.
pub fn extract(archive: &mut Archive<'_>) -> Result<Built, IngestError> {
    let presentation = "ppt/presentation.xml";
    let order = slide_order(&archive.required(presentation)?)?;
    let rels = relationships(archive, presentation)?;
    let mut b = Builder::new();
    for (n, rid) in order.iter().enumerate() {
        let Some((_, _, target)) = rels.iter().find(|(id, _, _)| id == rid) else {
            continue;
        };
        let target = target.clone();
        let Some(slide) = archive.text(&target)? else {
            continue;
        };
        let items = read_items(&slide)?;
        b.page();
        let title = items
            .iter()
            .filter_map(|i| match i {
                Item::Para {
                    placeholder: Some(p),
                    text,
                } if p == "title" || p == "ctrTitle" => Some(text.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(" ");
        let slide_no = n + 1;
        b.heading(
            1,
            &if title.trim().is_empty() {
                format!("Slide {slide_no}")
            } else {
                format!("Slide {slide_no}: {}", title.trim())
            },
        );
        write_items(&mut b, &items, true);
        let notes_part = relationships(archive, &target)?
            .into_iter()
            .find(|(_, kind, _)| kind.ends_with("/notesSlide"))
            .map(|(_, _, t)| t);
        if let Some(notes_part) = notes_part {
            if let Some(notes) = archive.text(&notes_part)? {
                let notes: Vec<Item> = read_items(&notes)?
                    .into_iter()
                    .filter(|i| matches!(i, Item::Para { placeholder: Some(p), .. } if p == "body"))
                    .collect();
                if !notes.is_empty() {
                    b.paragraph("Speaker notes:");
                    write_items(&mut b, &notes, false);
                }
            }
        }
    }
    nonempty(b.finish())
}

fn write_items(b: &mut Builder, items: &[Item], skip_title: bool) {
    for item in items {
        match item {
            Item::Para { placeholder, text } => {
                let is_title = matches!(placeholder.as_deref(), Some("title" | "ctrTitle"));
                let is_furniture = matches!(
                    placeholder.as_deref(),
                    Some("sldNum" | "dt" | "ftr" | "sldImg")
                );
                if !(is_furniture || (skip_title && is_title)) {
                    b.paragraph(text);
                }
            }
            Item::Table(rows) => b.table(None, rows, true),
        }
    }
}

/// Relationship ids of the slides, in presentation order.
fn slide_order(presentation: &str) -> Result<Vec<String>, IngestError> {
    let mut out = Vec::new();
    xml::walk(presentation, "PPTX", |event| {
        if let Event::Open(t) = event {
            if t.name == "sldId" {
                if let Some(id) = t.attr("r:id").or_else(|| t.attr("id")) {
                    out.push(id.to_owned());
                }
            }
        }
    })?;
    Ok(out)
}

/// Paragraphs of each shape and rows of each table of a slide or notes part, in order.
fn read_items(part: &str) -> Result<Vec<Item>, IngestError> {
    let mut items = Vec::new();
    let mut placeholder: Option<String> = None;
    let mut para = String::new();
    let mut in_text = false;
    // Inside `mc:Fallback`, which repeats its `mc:Choice`.
    let mut fallback = 0usize;
    let mut table: Option<(Vec<Vec<String>>, Vec<String>, String)> = None;
    xml::walk(part, "PPTX", |event| match event {
        Event::Open(t) => match t.name.as_str() {
            "sp" => placeholder = None,
            "ph" => placeholder = Some(t.attr("type").unwrap_or("body").to_owned()),
            "p" => para.clear(),
            "t" => in_text = fallback == 0,
            "Fallback" => fallback += 1,
            "br" => para.push('\n'),
            "tbl" => table = Some((Vec::new(), Vec::new(), String::new())),
            "tc" => {
                if let Some((_, _, cell)) = table.as_mut() {
                    cell.clear();
                }
            }
            _ => {}
        },
        Event::Text(s) if in_text => para.push_str(s),
        Event::Text(_) => {}
        Event::Close(name) => match name {
            "t" => in_text = false,
            "Fallback" => fallback = fallback.saturating_sub(1),
            "p" => {
                let text = std::mem::take(&mut para);
                if let Some((_, _, cell)) = table.as_mut() {
                    if !cell.is_empty() {
                        cell.push(' ');
                    }
                    cell.push_str(text.trim());
                } else if !text.trim().is_empty() {
                    items.push(Item::Para {
                        placeholder: placeholder.clone(),
                        text,
                    });
                }
            }
            "tc" => {
                if let Some((_, row, cell)) = table.as_mut() {
                    row.push(std::mem::take(cell));
                }
            }
            "tr" => {
                if let Some((rows, row, _)) = table.as_mut() {
                    rows.push(std::mem::take(row));
                }
            }
            "tbl" => {
                if let Some((rows, _, _)) = table.take() {
                    items.push(Item::Table(rows));
                }
            }
            _ => {}
        },
    })?;
    Ok(items)
}
