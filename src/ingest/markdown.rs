//! Markdown: the source text is kept as the extracted text (code blocks, links and all, so
//! citations quote what the author wrote); headings are located with a CommonMark parser.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

use super::heading::Heading;

/// Headings of `text` with their levels, titles and byte offsets, in document order.
pub fn headings(text: &str) -> Vec<Heading> {
    let mut out = Vec::new();
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_atx_and_setext_headings_but_not_code() {
        let text =
            "# Guide\n\nintro\n\n## Install `it`\n\n```\n# not a heading\n```\n\nSetup\n-----\n";
        let h = headings(text);
        let titles: Vec<_> = h.iter().map(|h| (h.level, h.title.as_str())).collect();
        assert_eq!(titles, vec![(1, "Guide"), (2, "Install it"), (2, "Setup")]);
        assert!(text[h[1].offset..].starts_with("## Install"));
    }
}
