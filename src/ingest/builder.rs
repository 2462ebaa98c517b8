//! Building an extracted text piece by piece: headings, paragraphs, pages and tables, each
//! located by byte offset as it is appended. The readers of structured formats (Office files,
//! e-books, RTF, CSV, OCR output) write through it so that every offset is right by
//! construction.
//!
//! Plain data: must never read files or run anything.

use serde::{Deserialize, Serialize};

use super::heading::Heading;

/// A table in the extracted text: rows are lines of `text[start..end]`, in Markdown pipe form;
/// the first line(s), `text[start..body]`, are the header row and its rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    /// Byte offset of the header row.
    pub start: usize,
    /// Byte offset of the first body row.
    pub body: usize,
    /// Byte offset one past the last row.
    pub end: usize,
    /// Caption (a sheet's name, an HTML `<caption>`), if any.
    pub caption: Option<String>,
}

impl Table {
    /// What a chunk holding some of the table's rows repeats: the caption and the header rows.
    pub fn context(&self, text: &str) -> String {
        let header = text[self.start..self.body].trim_end();
        match &self.caption {
            Some(c) if !c.trim().is_empty() => format!("{}\n{header}", c.trim()),
            _ => header.to_owned(),
        }
    }
}

/// Accumulates text, headings, page starts and tables.
#[derive(Debug, Default)]
pub struct Builder {
    text: String,
    headings: Vec<Heading>,
    page_starts: Vec<usize>,
    tables: Vec<Table>,
}

/// The parts a [`Builder`] made.
#[derive(Debug, Default)]
pub struct Built {
    /// The whole text.
    pub text: String,
    /// Headings in order.
    pub headings: Vec<Heading>,
    /// Where each page starts (empty when no page was started).
    pub page_starts: Vec<usize>,
    /// Tables in order.
    pub tables: Vec<Table>,
}

impl Builder {
    /// An empty text.
    pub fn new() -> Self {
        Self::default()
    }

    fn block(&mut self) {
        if !self.text.is_empty() {
            while !self.text.ends_with("\n\n") {
                self.text.push('\n');
            }
        }
    }

    /// Starts a new page (a PDF page, a slide): the next block begins it.
    pub fn page(&mut self) {
        self.block();
        self.page_starts.push(self.text.len());
    }

    /// A heading of `level` (1–6), as its own block.
    pub fn heading(&mut self, level: u8, title: &str) {
        let title = one_line(title);
        if title.is_empty() {
            return;
        }
        self.block();
        self.headings.push(Heading {
            level: level.clamp(1, 6),
            title: title.clone(),
            offset: self.text.len(),
        });
        self.text.push_str(&title);
    }

    /// A paragraph (its inner line breaks kept), as its own block. Blank input adds nothing.
    pub fn paragraph(&mut self, text: &str) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        self.block();
        self.text.push_str(text);
    }

    /// A table: `rows[0]` is the header row when `header` is true (see [`write_table`]).
    pub fn table(&mut self, caption: Option<&str>, rows: &[Vec<String>], header: bool) {
        if rows.iter().all(|r| r.iter().all(|c| c.trim().is_empty())) {
            return;
        }
        self.block();
        if let Some(t) = write_table(&mut self.text, caption, rows, header) {
            self.tables.push(t);
        }
    }

    /// Appends another built text as its own block, its offsets shifted.
    pub fn append(&mut self, other: Built) {
        if other.text.trim().is_empty() {
            return;
        }
        self.block();
        let at = self.text.len();
        self.text.push_str(&other.text);
        self.headings
            .extend(other.headings.into_iter().map(|mut h| {
                h.offset += at;
                h
            }));
        self.page_starts
            .extend(other.page_starts.iter().map(|p| p + at));
        self.tables.extend(other.tables.into_iter().map(|mut t| {
            t.start += at;
            t.body += at;
            t.end += at;
            t
        }));
    }

    /// The finished parts.
    pub fn finish(self) -> Built {
        Built {
            text: self.text,
            headings: self.headings,
            page_starts: self.page_starts,
            tables: self.tables,
        }
    }
}

/// Appends `rows` to `text` as Markdown pipe rows, one line each (a cell's inner breaks become
/// spaces, `|` is escaped, empty trailing cells are dropped, empty rows skipped); with `header`,
/// `rows[0]` is followed by a rule. Returns the [`Table`] when it has a header and a body.
pub fn write_table(
    text: &mut String,
    caption: Option<&str>,
    rows: &[Vec<String>],
    header: bool,
) -> Option<Table> {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut cells: Vec<String> = r.iter().map(|c| cell(c)).collect();
            while cells.last().is_some_and(String::is_empty) {
                cells.pop();
            }
            cells
        })
        .filter(|r| !r.is_empty())
        .collect();
    if rows.is_empty() {
        return None;
    }
    let width = rows.iter().map(Vec::len).max().unwrap_or(1);
    let start = text.len();
    let mut body = start;
    for (i, row) in rows.iter().enumerate() {
        text.push('|');
        for c in 0..width {
            text.push(' ');
            text.push_str(row.get(c).map_or("", String::as_str));
            text.push_str(" |");
        }
        text.push('\n');
        if i == 0 && header {
            text.push('|');
            for _ in 0..width {
                text.push_str(" --- |");
            }
            text.push('\n');
            body = text.len();
        }
    }
    text.pop();
    (header && rows.len() > 1).then(|| Table {
        start,
        body,
        end: text.len(),
        caption: caption.map(one_line).filter(|c| !c.is_empty()),
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn cell(s: &str) -> String {
    one_line(s).replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_point_at_what_was_written() {
        let mut b = Builder::new();
        b.page();
        b.heading(2, "  Prices \n list ");
        b.paragraph("Fruit we sell.");
        let rows = vec![
            vec!["Fruit".to_owned(), "Price".to_owned()],
            vec!["apple".to_owned(), "1|2".to_owned()],
            vec![String::new(), String::new()],
            vec!["pear".to_owned(), "3".to_owned(), String::new()],
        ];
        b.table(Some("Sheet 1"), &rows, true);
        b.page();
        b.paragraph("next");
        let built = b.finish();
        assert_eq!(built.headings[0].title, "Prices list");
        assert!(built.text[built.headings[0].offset..].starts_with("Prices list"));
        let t = &built.tables[0];
        assert_eq!(
            &built.text[t.start..t.end],
            "| Fruit | Price |\n| --- | --- |\n| apple | 1\\|2 |\n| pear | 3 |"
        );
        assert_eq!(
            &built.text[t.body..t.end],
            "| apple | 1\\|2 |\n| pear | 3 |"
        );
        assert_eq!(
            t.context(&built.text),
            "Sheet 1\n| Fruit | Price |\n| --- | --- |"
        );
        assert_eq!(built.page_starts.len(), 2);
        assert!(built.text[built.page_starts[1]..].starts_with("next"));
    }
}
