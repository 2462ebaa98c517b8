//! HTML: visible text with block structure and headings kept; scripts, styles and other
//! invisible content dropped.

use scraper::{ElementRef, Html, Node};

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

/// Extracts the visible text of an HTML document and its headings (offsets into that text).
pub fn extract(source: &str) -> (String, Vec<Heading>) {
    let doc = Html::parse_document(source);
    let mut out = Walker::default();
    out.walk(doc.root_element(), false);
    let text = out.text.trim_end().to_owned();
    (text, out.headings)
}

#[derive(Default)]
struct Walker {
    text: String,
    headings: Vec<Heading>,
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
        let (text, headings) = extract(
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
}
