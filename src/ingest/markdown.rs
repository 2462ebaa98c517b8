//! Markdown: the source text is kept as the extracted text (code blocks, links and all, so
//! citations quote what the author wrote); headings and tables are located with a CommonMark
//! parser.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

use super::builder::Table;
use super::heading::Heading;

/// Headings and tables of `text`, located by byte offset, in document order.
pub fn structure(text: &str) -> (Vec<Heading>, Vec<Table>) {
    let mut out = Vec::new();
    let mut tables = Vec::new();
    let mut table: Option<(usize, Option<usize>)> = None;
    let mut current: Option<(u8, usize, String)> = None;
    let parser = Parser::new_ext(text, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH);
    for (event, range) in parser.into_offset_iter() {
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                current = Some((level as u8, range.start, String::new()));
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some((_, _, title)) = current.as_mut() {
                    title.push_str(&t);
                }
            }
            Event::Start(Tag::Table(_)) => table = Some((range.start, None)),
            Event::Start(Tag::TableRow) => {
                if let Some((_, body @ None)) = table.as_mut() {
                    *body = Some(range.start);
                }
            }
            Event::End(TagEnd::Table) => {
                if let Some((start, Some(body))) = table.take() {
                    let end = start + text[start..range.end].trim_end().len();
                    if body < end {
                        tables.push(Table {
                            start,
                            body,
                            end,
                            caption: None,
                        });
                    }
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((level, offset, title)) = current.take() {
                    out.push(Heading {
                        level,
                        title: title.trim().to_owned(),
                        offset,
                    });
                }
            }
            _ => {}
        }
    }
    (out, tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_atx_and_setext_headings_but_not_code() {
        let text =
            "# Guide\n\nintro\n\n## Install `it`\n\n```\n# not a heading\n```\n\nSetup\n-----\n";
        let (h, _) = structure(text);
        let titles: Vec<_> = h.iter().map(|h| (h.level, h.title.as_str())).collect();
        assert_eq!(titles, vec![(1, "Guide"), (2, "Install it"), (2, "Setup")]);
        assert!(text[h[1].offset..].starts_with("## Install"));
    }

    #[test]
    fn finds_tables_and_their_header_rows() {
        let text =
            "# Prices\n\n| Fruit | Price |\n|---|---|\n| apple | 1 |\n| pear | 2 |\n\nafter\n";
        let (_, tables) = structure(text);
        assert_eq!(tables.len(), 1);
        let t = &tables[0];
        assert_eq!(&text[t.start..t.body], "| Fruit | Price |\n|---|---|\n");
        assert_eq!(&text[t.body..t.end], "| apple | 1 |\n| pear | 2 |");
    }
}
