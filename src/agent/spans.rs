//! Cutting a passage into the units an answer may quote: sentences of prose, list items,
//! table rows and code blocks, each with its exact byte range in the passage. A code block
//! (fenced) travels with the sentence that introduces it, so a command is never quoted without
//! what it does, nor a sentence announcing a command without the command. Headings are not
//! units; they are the context of the units below them.
//!
//! Pure text handling: no model, no I/O.

/// What a unit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitKind {
    /// A sentence of prose.
    Sentence,
    /// One list item.
    ListItem,
    /// One table row.
    TableRow,
    /// A sentence with the code block it introduces (or a lone code block).
    Code,
}

/// One quotable unit of a passage.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    /// Byte offset of its first character in the passage.
    pub start: usize,
    /// Byte offset just past its last character.
    pub end: usize,
    /// What it is.
    pub kind: UnitKind,
    /// The nearest heading above it in the passage (if any).
    pub heading: Option<String>,
}

/// Abbreviations after which a full stop does not end a sentence.
const ABBREVIATIONS: &[&str] = &[
    "e.g", "i.e", "etc", "vs", "mr", "mrs", "ms", "dr", "st", "no", "fig", "cf", "approx", "c",
    "ca", "jr", "sr", "prof", "inc", "ltd", "co", "mt", "u.s", "u.k", "al",
];

fn line_kind(line: &str) -> Option<UnitKind> {
    let t = line.trim_start();
    if t.starts_with('|') {
        return Some(UnitKind::TableRow);
    }
    let bullet = t.starts_with("- ") || t.starts_with("* ") || t.starts_with("+ ");
    let numbered = {
        let digits = t.bytes().take_while(u8::is_ascii_digit).count();
        digits > 0 && digits < 4 && matches!(&t.as_bytes()[digits..], [b'.' | b')', b' ', ..])
    };
    (bullet || numbered).then_some(UnitKind::ListItem)
}

fn is_table_rule(line: &str) -> bool {
    let t = line.trim();
    t.starts_with('|') && t.chars().all(|c| matches!(c, '|' | '-' | ':' | ' '))
}

/// Sentence ranges of one prose block `text[start..end]` (line breaks inside are wrapping).
fn prose_sentences(text: &str, start: usize, end: usize, out: &mut Vec<(usize, usize)>) {
    let block = &text[start..end];
    let bytes = block.as_bytes();
    let mut s = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if matches!(b, b'.' | b'!' | b'?') {
            // Closing quotes and brackets belong to the sentence.
            let mut e = i + 1;
            while e < bytes.len() && matches!(bytes[e], b'"' | b'\'' | b')' | b']') {
                e += 1;
            }
            let next_ws = e >= bytes.len() || bytes[e].is_ascii_whitespace();
            let next_word = block[e..].trim_start().chars().next();
            let starts_sentence = next_word.is_none_or(|c| {
                c.is_uppercase() || c.is_ascii_digit() || matches!(c, '"' | '`' | '(' | '[' | '*')
            });
            let word_before: String = block[..i]
                .rsplit(|c: char| c.is_whitespace() || c == '(')
                .next()
                .unwrap_or("")
                .to_lowercase();
            let abbreviation = b == b'.'
                && (ABBREVIATIONS.contains(&word_before.as_str())
                    || (word_before.chars().count() == 1
                        && word_before.chars().all(char::is_alphabetic)));
            if next_ws && starts_sentence && !abbreviation {
                push_trimmed(text, start + s, start + e, out);
                s = e;
            }
            i = e;
            continue;
        }
        i += 1;
    }
    push_trimmed(text, start + s, end, out);
}

fn push_trimmed(text: &str, s: usize, e: usize, out: &mut Vec<(usize, usize)>) {
    let piece = &text[s..e];
    let lead = piece.len() - piece.trim_start().len();
    let t = piece.trim();
    if t.chars().any(char::is_alphanumeric) {
        out.push((s + lead, s + lead + t.len()));
    }
}

/// The lines of a text with their byte offsets, read one at a time.
struct Lines<'a> {
    lines: Vec<&'a str>,
    /// The next line to read.
    i: usize,
    /// Byte offset of the next line.
    offset: usize,
}

/// One line: its text (with its line break), where it starts, where its content ends.
struct Line<'a> {
    text: &'a str,
    start: usize,
    end: usize,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            lines: text.split_inclusive('\n').collect(),
            i: 0,
            offset: 0,
        }
    }

    fn peek(&self) -> Option<&'a str> {
        self.lines.get(self.i).copied()
    }

    fn next_line(&mut self) -> Option<Line<'a>> {
        let text = self.peek()?;
        let start = self.offset;
        self.offset += text.len();
        self.i += 1;
        Some(Line {
            text,
            start,
            end: start + text.trim_end_matches(['\n', '\r']).len(),
        })
    }

    /// Reads through the line that closes a code fence (or the end); returns where the
    /// block's content ends, `end` when nothing follows.
    fn through_fence(&mut self, fence: &str, mut end: usize) -> usize {
        while let Some(l) = self.next_line() {
            end = l.end;
            if l.text.trim().starts_with(fence) {
                break;
            }
        }
        end
    }

    /// Reads a list item's wrapped continuation lines (indented, not a new item, heading,
    /// fence or blank); returns where the item ends.
    fn through_continuations(&mut self, mut end: usize) -> usize {
        while let Some(l) = self.peek() {
            let lt = l.trim();
            if lt.is_empty()
                || line_kind(l).is_some()
                || lt.starts_with('#')
                || lt.starts_with("```")
                || !l.starts_with(' ')
            {
                break;
            }
            end = self.next_line().map_or(end, |l| l.end);
        }
        end
    }
}

/// Where a line's content starts (after its indentation).
fn content_start(line: &Line<'_>) -> usize {
    line.start + (line.text.len() - line.text.trim_start().len())
}

/// The units of `text`, in order.
pub fn units(text: &str) -> Vec<Unit> {
    let mut out: Vec<Unit> = Vec::new();
    let mut heading: Option<String> = None;
    // A prose block being collected: its byte range.
    let mut prose: Option<(usize, usize)> = None;
    let mut lines = Lines::new(text);
    let flush = |prose: &mut Option<(usize, usize)>, out: &mut Vec<Unit>, h: &Option<String>| {
        if let Some((s, e)) = prose.take() {
            let mut spans = Vec::new();
            prose_sentences(text, s, e, &mut spans);
            out.extend(spans.into_iter().map(|(s, e)| Unit {
                start: s,
                end: e,
                kind: UnitKind::Sentence,
                heading: h.clone(),
            }));
        }
    };
    while let Some(line) = lines.next_line() {
        let t = line.text.trim();
        if t.starts_with("```") || t.starts_with("~~~") {
            flush(&mut prose, &mut out, &heading);
            let end = lines.through_fence(&t[..3], line.end);
            push_code(text, &mut out, content_start(&line), end, &heading);
            continue;
        }
        if t.is_empty() {
            flush(&mut prose, &mut out, &heading);
            continue;
        }
        if t.starts_with('#') {
            flush(&mut prose, &mut out, &heading);
            let h = t.trim_start_matches('#').trim();
            heading = (!h.is_empty()).then(|| h.to_owned());
            continue;
        }
        if let Some(kind) = line_kind(line.text) {
            flush(&mut prose, &mut out, &heading);
            if kind == UnitKind::TableRow && is_table_rule(line.text) {
                continue;
            }
            let end = if kind == UnitKind::ListItem {
                lines.through_continuations(line.end)
            } else {
                line.end
            };
            out.push(Unit {
                start: content_start(&line),
                end,
                kind,
                heading: heading.clone(),
            });
            continue;
        }
        prose = Some(match prose {
            Some((s, _)) => (s, line.end),
            None => (content_start(&line), line.end),
        });
    }
    flush(&mut prose, &mut out, &heading);
    out
}

/// Adds a code block; the sentence just before it (nothing but white space between)
/// introduces it and becomes part of it.
fn push_code(text: &str, out: &mut Vec<Unit>, start: usize, end: usize, heading: &Option<String>) {
    let joined = out
        .last_mut()
        .filter(|u| u.kind == UnitKind::Sentence && text[u.end..start].trim().is_empty());
    match joined {
        Some(u) => {
            u.end = end;
            u.kind = UnitKind::Code;
        }
        None => out.push(Unit {
            start,
            end,
            kind: UnitKind::Code,
            heading: heading.clone(),
        }),
    }
}

/// A unit's text as an answer shows it: prose with its line wrapping folded into spaces,
/// code blocks as they are.
pub fn display(text: &str, unit: &Unit) -> String {
    let raw = &text[unit.start..unit.end];
    if unit.kind != UnitKind::Code {
        return raw.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    match raw.find("```").or_else(|| raw.find("~~~")) {
        Some(0) | None => raw.to_owned(),
        Some(at) => {
            let intro = raw[..at].split_whitespace().collect::<Vec<_>>().join(" ");
            format!("{intro}\n\n{}", &raw[at..])
        }
    }
}

/// Words in `s` (white-space separated).
pub fn word_count(s: &str) -> usize {
    s.split_whitespace().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(t: &str) -> Vec<(&str, UnitKind)> {
        units(t)
            .iter()
            .map(|u| (&t[u.start..u.end], u.kind))
            .collect()
    }

    #[test]
    fn prose_is_cut_into_sentences_across_wrapped_lines() {
        let t = "The key is printed once. Groundwork stores only its hash, so a\nlost key cannot \
                 be recovered. See e.g. the guide. It was c. 1000 A.D. when Rollo came.";
        let got = texts(t);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(
            got[1].0,
            "Groundwork stores only its hash, so a\nlost key cannot be recovered."
        );
        assert_eq!(got[2].0, "See e.g. the guide.");
    }

    #[test]
    fn code_travels_with_its_introduction_and_headings_give_context() {
        let t = "# Keys\n\n## Creating keys\n\nKeys are created on the machine:\n\n```sh\n\
                 groundwork keys create --tenant acme\n```\n\nThe key is printed once.\n";
        let us = units(t);
        assert_eq!(us.len(), 2, "{us:?}");
        assert_eq!(us[0].kind, UnitKind::Code);
        assert!(t[us[0].start..us[0].end].starts_with("Keys are created"));
        assert!(t[us[0].start..us[0].end].ends_with("```"));
        assert_eq!(us[0].heading.as_deref(), Some("Creating keys"));
        let shown = display(t, &us[0]);
        assert!(
            shown.contains("machine:\n\n```sh\ngroundwork keys create"),
            "{shown}"
        );
    }

    #[test]
    fn lists_and_tables_are_units_of_their_own() {
        let t = "Limits:\n- files up to 50 MiB\n  per upload\n- 8 files at once\n\n\
                 | model | dims |\n|---|---|\n| MiniLM | 384 |\n";
        let got = texts(t);
        assert_eq!(
            got,
            vec![
                ("Limits:", UnitKind::Sentence),
                ("- files up to 50 MiB\n  per upload", UnitKind::ListItem),
                ("- 8 files at once", UnitKind::ListItem),
                ("| model | dims |", UnitKind::TableRow),
                ("| MiniLM | 384 |", UnitKind::TableRow),
            ]
        );
    }

    #[test]
    fn offsets_are_exact_for_any_text() {
        let t = "  Héllo wörld. Ünïcode?  Yes!\n\n```\nno end";
        for u in units(t) {
            assert!(t.is_char_boundary(u.start) && t.is_char_boundary(u.end));
            assert!(!t[u.start..u.end].trim().is_empty());
        }
    }
}
