//! HTML: visible text with block structure, headings and tables kept; scripts, styles and
//! other invisible content dropped.

use scraper::{ElementRef, Html, Node};

use super::builder::{write_table, Built, Table};
use super::heading::Heading;

const SKIP: &[&str] = &[
    "script", "style", "noscript", "template", "head", "svg", "iframe", "object", "canvas",
];
const BLOCK: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "main",
    "header",
    "footer",
    "nav",
    "aside",
    "ul",
    "ol",
    "li",
    "table",
    "tr",
    "blockquote",
    "pre",
    "figure",
    "figcaption",
    "dl",
    "dt",
    "dd",
    "form",
    "fieldset",
    "address",
    "hr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "title",
    "body",
];

/// Extracts the visible text of an HTML document, its headings and tables (offsets into that
/// text).
pub fn extract(source: &str) -> Built {
    let doc = Html::parse_document(source);
    let mut out = Walker::default();
    out.walk(doc.root_element(), false);
    let text = out.text.trim_end().to_owned();
    Built {
        text,
        headings: out.headings,
        page_starts: Vec::new(),
        tables: out.tables,
    }
}

#[derive(Default)]
struct Walker {
    text: String,
    headings: Vec<Heading>,
    tables: Vec<Table>,
}

/// The rows of `table` (not those of tables nested in it) as cell texts; whether the first row
/// is a header (`<th>` cells or inside `<thead>`); the `<caption>`.
fn table_rows(table: ElementRef<'_>) -> (Vec<Vec<String>>, bool, Option<String>) {
    let mut rows = Vec::new();
    let mut header = false;
    let mut caption = None;
    let mut stack: Vec<ElementRef<'_>> = table.child_elements().collect();
    stack.reverse();
    while let Some(el) = stack.pop() {
        match el.value().name() {
            "caption" => caption = Some(el.text().collect::<String>()),
            "thead" | "tbody" | "tfoot" => {
                let mut kids: Vec<_> = el.child_elements().collect();
                kids.reverse();
                stack.extend(kids);
            }
            "tr" => {
                let cells: Vec<ElementRef<'_>> = el
                    .child_elements()
                    .filter(|c| matches!(c.value().name(), "td" | "th"))
                    .collect();
                if rows.is_empty() {
                    let in_head = el
                        .parent()
                        .and_then(ElementRef::wrap)
                        .is_some_and(|p| p.value().name() == "thead");
                    header = in_head
                        || (!cells.is_empty() && cells.iter().all(|c| c.value().name() == "th"));
                }
                rows.push(cells.iter().map(|c| c.text().collect::<String>()).collect());
            }
            _ => {}
        }
    }
    (rows, header, caption)
}

impl Walker {
    fn block_break(&mut self) {
        let trimmed = self.text.trim_end_matches([' ', '\t']).len();
        self.text.truncate(trimmed);
        if !self.text.is_empty() && !self.text.ends_with("\n\n") {
            self.text.push_str(if self.text.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            });
        }
    }

    fn push_text(&mut self, t: &str, preformatted: bool) {
        if preformatted {
            self.text.push_str(t);
            return;
        }
        let at_line_start = self.text.is_empty() || self.text.ends_with(char::is_whitespace);
        if t.starts_with(char::is_whitespace) && !at_line_start {
            self.text.push(' ');
        }
        let mut words = t.split_whitespace().peekable();
        let has_words = words.peek().is_some();
        for (i, word) in words.enumerate() {
            if i > 0 {
                self.text.push(' ');
            }
            self.text.push_str(word);
        }
        if has_words && t.ends_with(char::is_whitespace) {
            self.text.push(' ');
        }
    }

    fn walk(&mut self, el: ElementRef<'_>, pre: bool) {
        let name = el.value().name();
        if SKIP.contains(&name) {
            return;
        }
        if name == "table" {
            let (rows, header, caption) = table_rows(el);
            if rows.iter().any(|r| r.iter().any(|c| !c.trim().is_empty())) {
                self.block_break();
                if let Some(t) = write_table(&mut self.text, caption.as_deref(), &rows, header) {
                    self.tables.push(t);
                }
                self.block_break();
                return;
            }
        }
        let block = BLOCK.contains(&name);
        let heading_level = match name.as_bytes() {
            [b'h', d @ b'1'..=b'6'] => Some(d - b'0'),
            _ => None,
        };
        if block {
            self.block_break();
        }
        let start = self.text.len();
        let pre = pre || name == "pre" || name == "textarea";
        for child in el.children() {
            match child.value() {
                Node::Text(t) => self.push_text(t, pre),
                Node::Element(_) => {
                    if let Some(child_el) = ElementRef::wrap(child) {
                        if child_el.value().name() == "br" {
                            self.text.push('\n');
                        } else {
                            self.walk(child_el, pre);
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(level) = heading_level {
            let title = self.text[start..].trim().to_owned();
            if !title.is_empty() {
                self.headings.push(Heading {
                    level,
                    title,
                    offset: start,
                });
            }
        }
        if block {
            self.block_break();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_visible_text_and_headings() {
        let Built { text, headings, .. } = extract(
            "<html><head><title>T</title><style>p{}</style></head><body>\
             <h1>Guide</h1><p>Hello <b>bold</b> world.</p><script>evil()</script>\
             <h2>Part <i>two</i></h2><ul><li>one</li><li>two</li></ul></body></html>",
        );
        assert!(!text.contains("evil") && !text.contains("p{}"), "{text}");
        assert!(text.contains("Hello bold world."), "{text}");
        assert_eq!(headings.len(), 2);
        assert_eq!(headings[1].title, "Part two");
        assert!(text[headings[1].offset..].starts_with("Part two"));
        assert!(text.contains("one\n\ntwo"), "{text:?}");
    }

    #[test]
    fn tables_become_pipe_rows_with_their_header() {
        let built = extract(
            "<p>before</p><table><caption>Prices</caption><thead><tr><th>Fruit</th>\
             <th>Price</th></tr></thead><tbody><tr><td>apple</td><td>1</td></tr>\
             <tr><td>pear</td><td>2</td></tr></tbody></table><p>after</p>",
        );
        let t = &built.tables[0];
        assert_eq!(
            &built.text[t.start..t.end],
            "| Fruit | Price |\n| --- | --- |\n| apple | 1 |\n| pear | 2 |"
        );
        assert_eq!(t.caption.as_deref(), Some("Prices"));
        assert!(
            built.text.ends_with("pear | 2 |\n\nafter"),
            "{:?}",
            built.text
        );
    }
}
