//! The pure parts of a grounded answer: trimming passages to their best sentences, numbering
//! them into the prompt, and turning the answer's `[n]` markers into checked citations.
//!
//! A citation survives only if its number names a retrieved source and its support is in that
//! source: a quote the model gave (`[2: "exact words"]`) must occur in the passage; without a
//! quote, the passage sentence sharing the most content words with the cited claim becomes the
//! quote, and a claim sharing none is dropped. An answer with no valid marker (small models
//! rarely write them, or invent numbers) gets citations inferred the same way, marked
//! `inferred`: the answer sentence must share at least two content words, and half of its
//! own, with a sentence of a retrieved passage.

use std::collections::HashSet;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// A retrieved passage as numbered in the prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Source {
    /// Its number in the prompt (1-based).
    pub n: usize,
    /// Chunk id.
    pub chunk_id: u64,
    /// Document id.
    pub document_id: String,
    /// Document name.
    pub document_name: String,
    /// Knowledge base id.
    pub kb_id: String,
    /// First page (PDF).
    pub page: Option<u32>,
    /// Last page (PDF; a passage may span two).
    pub page_end: Option<u32>,
    /// Enclosing headings.
    pub heading_path: Vec<String>,
    /// Cosine similarity to the query.
    pub similarity: Option<f32>,
    /// The whole chunk text.
    pub text: String,
    /// The part of it put in the prompt.
    pub excerpt: String,
    /// The header row (and caption) of the table whose rows it holds: put in the prompt
    /// before the excerpt so the rows can be read; not part of `text`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub table_header: String,
}

/// A checked citation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Citation {
    /// The source's number in the answer.
    pub n: usize,
    /// Chunk id.
    pub chunk_id: u64,
    /// Document id.
    pub document_id: String,
    /// Document name.
    pub document_name: String,
    /// First page of the passage (PDF).
    pub page: Option<u32>,
    /// Last page of the passage (PDF).
    pub page_end: Option<u32>,
    /// Enclosing headings.
    pub heading_path: Vec<String>,
    /// The supporting words, verbatim from the chunk.
    pub quote: String,
    /// Byte offsets of the quote in the chunk text.
    pub quote_start: usize,
    /// End of the quote.
    pub quote_end: usize,
    /// True when the answer had no marker and the support was found by overlap.
    pub inferred: bool,
}

/// A citation that failed its check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Dropped {
    /// The number the answer used.
    pub n: usize,
    /// `not_retrieved`, `quote_not_in_source` or `unsupported`.
    pub reason: String,
}

const STOPWORDS: &[&str] = &[
    "the", "and", "for", "are", "but", "not", "you", "all", "any", "can", "had", "her", "was",
    "one", "our", "out", "has", "have", "his", "how", "its", "may", "new", "now", "see", "who",
    "did", "get", "use", "that", "this", "with", "from", "they", "will", "what", "when", "where",
    "which", "your", "into", "than", "then", "them", "these", "those", "there", "their", "been",
    "were", "also", "does", "each", "such", "only", "some", "about", "would", "could", "should",
    "source", "sources", "answer",
];

fn stopwords() -> &'static HashSet<&'static str> {
    static S: OnceLock<HashSet<&'static str>> = OnceLock::new();
    S.get_or_init(|| STOPWORDS.iter().copied().collect())
}

/// Lower-cased content words of `text` (3+ letters or any number, stop words removed).
pub fn content_words(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| {
            (w.chars().count() >= 3 || w.chars().all(|c| c.is_ascii_digit()))
                && !stopwords().contains(w.as_str())
        })
        .collect()
}

/// Byte ranges of the sentences of `text` (split after `.`, `!`, `?` followed by a space, and
/// at line breaks), trimmed, empty ones left out.
pub fn sentences(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let push = |s: usize, e: usize, out: &mut Vec<(usize, usize)>| {
        let piece = &text[s..e];
        let lead = piece.len() - piece.trim_start().len();
        let trimmed = piece.trim();
        if !trimmed.is_empty() {
            out.push((s + lead, s + lead + trimmed.len()));
        }
    };
    for (i, &b) in bytes.iter().enumerate() {
        let end_here = match b {
            b'\n' => Some(i),
            b'.' | b'!' | b'?' => {
                let next = bytes.get(i + 1).copied();
                (next.is_none() || next.is_some_and(|n| n == b' ' || n == b'\n')).then_some(i + 1)
            }
            _ => None,
        };
        if let Some(e) = end_here {
            if e > start {
                push(start, e, &mut out);
            }
            start = e;
        }
    }
    if start < text.len() {
        push(start, text.len(), &mut out);
    }
    out
}

/// Rough token count (4 bytes per token), as the gateway estimates.
pub fn estimate_tokens(text: &str) -> usize {
    text.len().div_ceil(4)
}

/// The part of `text` within `max_tokens`: the whole text if it fits, else the run of
/// consecutive sentences around the one sharing most words with the query.
pub fn excerpt(text: &str, query: &str, max_tokens: usize) -> String {
    if estimate_tokens(text) <= max_tokens {
        return text.trim().to_owned();
    }
    let q = content_words(query);
    let spans = sentences(text);
    if spans.is_empty() {
        return String::new();
    }
    let best = spans
        .iter()
        .enumerate()
        .max_by_key(|(i, (s, e))| {
            let overlap = content_words(&text[*s..*e]).intersection(&q).count();
            (overlap, std::cmp::Reverse(*i))
        })
        .map(|(i, _)| i)
        .unwrap_or(0);
    let (mut lo, mut hi) = (best, best);
    let len = |lo: usize, hi: usize| estimate_tokens(&text[spans[lo].0..spans[hi].1]);
    loop {
        let grew_right = hi + 1 < spans.len() && len(lo, hi + 1) <= max_tokens;
        if grew_right {
            hi += 1;
        }
        let grew_left = lo > 0 && len(lo - 1, hi) <= max_tokens;
        if grew_left {
            lo -= 1;
        }
        if !grew_left && !grew_right {
            break;
        }
    }
    let mut out = text[spans[lo].0..spans[hi].1].to_owned();
    // One sentence longer than the budget: cut on a character boundary.
    let max_bytes = max_tokens * 4;
    if out.len() > max_bytes {
        let mut cut = max_bytes;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// The sources block of the prompt.
pub fn sources_block(sources: &[Source]) -> String {
    let mut out = String::new();
    for s in sources {
        out.push_str(&format!("[{}] {}", s.n, s.document_name));
        if let Some(p) = s.page {
            out.push_str(&format!(", page {p}"));
        }
        if let Some(h) = s.heading_path.last() {
            out.push_str(&format!(", \"{h}\""));
        }
        out.push_str(":\n");
        if !s.table_header.is_empty() {
            out.push_str(s.table_header.trim());
            out.push('\n');
        }
        out.push_str(s.excerpt.trim());
        out.push_str("\n\n");
    }
    out.trim_end().to_owned()
}

fn markers() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| {
        Regex::new(r#"\[\s*(\d{1,3}(?:\s*,\s*\d{1,3})*)\s*(?:[:,]\s*"([^"\]]{1,400})"\s*)?\]"#)
            .expect("valid regex")
    })
}

/// Where `quote` occurs in `text`, ignoring case and runs of white space: byte range in `text`.
fn find_quote(text: &str, quote: &str) -> Option<(usize, usize)> {
    let words: Vec<&str> = quote.split_whitespace().collect();
    if words.is_empty() {
        return None;
    }
    // Word-by-word match over `text`'s words, so offsets map back to the original.
    let spans: Vec<(usize, &str)> = text
        .split_whitespace()
        .map(|w| (w.as_ptr() as usize - text.as_ptr() as usize, w))
        .collect();
    let lower: Vec<String> = spans.iter().map(|(_, w)| w.to_lowercase()).collect();
    let want: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
    let n = want.len();
    'outer: for i in 0..lower.len() {
        if i + n > lower.len() {
            break;
        }
        for j in 0..n {
            let (got, w) = (&lower[i + j], &want[j]);
            let ok = if n == 1 {
                got.contains(w.as_str())
            } else if j == 0 {
                got.ends_with(w.as_str())
            } else if j == n - 1 {
                got.starts_with(w.as_str())
            } else {
                got == w
            };
            if !ok {
                continue 'outer;
            }
        }
        let (s, first) = spans[i];
        let (e, last) = spans[i + n - 1];
        let start = s + first.to_lowercase().rfind(&want[0]).unwrap_or(0);
        let end = e + last.to_lowercase().find(&want[n - 1]).unwrap_or(0) + want[n - 1].len();
        if text.is_char_boundary(start) && text.is_char_boundary(end) && start < end {
            return Some((start, end));
        }
        return Some((s, e + last.len()));
    }
    None
}

/// The sentence of `text` sharing most content words with `claim`: (start, end, overlap).
fn best_sentence(text: &str, claim: &HashSet<String>) -> Option<(usize, usize, usize)> {
    sentences(text)
        .into_iter()
        .map(|(s, e)| (s, e, content_words(&text[s..e]).intersection(claim).count()))
        .max_by_key(|&(s, _, o)| (o, std::cmp::Reverse(s)))
}

/// A citation of `source.text[start..end]`.
pub fn citation(source: &Source, start: usize, end: usize, inferred: bool) -> Citation {
    Citation {
        n: source.n,
        chunk_id: source.chunk_id,
        document_id: source.document_id.clone(),
        document_name: source.document_name.clone(),
        page: source.page,
        page_end: source.page_end,
        heading_path: source.heading_path.clone(),
        quote: source.text[start..end].to_owned(),
        quote_start: start,
        quote_end: end,
        inferred,
    }
}

/// The source numbers of the markers in `text`.
pub fn marker_numbers(text: &str) -> Vec<usize> {
    markers()
        .captures_iter(text)
        .flat_map(|m| {
            m[1].split(',')
                .filter_map(|x| x.trim().parse::<usize>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `text` without its citation markers (`[1]`, `[2: "quote"]`).
pub fn strip_markers(text: &str) -> String {
    markers().replace_all(text, "").into_owned()
}

/// Checks the answer's markers against the sources; infers citations when it has none.
pub fn verify(answer: &str, sources: &[Source]) -> (Vec<Citation>, Vec<Dropped>) {
    let mut cited: Vec<Citation> = Vec::new();
    let mut dropped = Vec::new();
    let mut seen = HashSet::new();
    let mut any_marker = false;
    for (start, end) in sentences(answer) {
        let sentence = &answer[start..end];
        let claim = content_words(&markers().replace_all(sentence, ""));
        for m in markers().captures_iter(sentence) {
            any_marker = true;
            let quote = m.get(2).map(|q| q.as_str());
            for n in m[1]
                .split(',')
                .filter_map(|x| x.trim().parse::<usize>().ok())
            {
                let Some(source) = sources.iter().find(|s| s.n == n) else {
                    dropped.push(Dropped {
                        n,
                        reason: "not_retrieved".into(),
                    });
                    continue;
                };
                let span = match quote {
                    Some(q) => match find_quote(&source.text, q) {
                        Some(span) => Some(span),
                        None => {
                            dropped.push(Dropped {
                                n,
                                reason: "quote_not_in_source".into(),
                            });
                            continue;
                        }
                    },
                    None => match best_sentence(&source.text, &claim) {
                        Some((s, e, overlap)) if overlap > 0 || claim.is_empty() => Some((s, e)),
                        _ => None,
                    },
                };
                match span {
                    Some((s, e)) => {
                        if seen.insert((n, s, e)) {
                            cited.push(citation(source, s, e, false));
                        }
                    }
                    None => dropped.push(Dropped {
                        n,
                        reason: "unsupported".into(),
                    }),
                }
            }
        }
    }
    // No marker (small models rarely write them) or none that held: infer from overlap.
    if !any_marker || cited.is_empty() {
        for (start, end) in sentences(answer) {
            let claim = content_words(&markers().replace_all(&answer[start..end], ""));
            if claim.len() < 2 {
                continue;
            }
            let best = sources
                .iter()
                .filter_map(|src| best_sentence(&src.text, &claim).map(|b| (src, b)))
                .max_by_key(|(src, (_, _, o))| (*o, std::cmp::Reverse(src.n)));
            if let Some((src, (s, e, overlap))) = best {
                if overlap >= 2 && overlap * 2 >= claim.len().min(6) && seen.insert((src.n, s, e)) {
                    cited.push(citation(src, s, e, true));
                }
            }
            if cited.len() >= 3 {
                break;
            }
        }
    }
    (cited, dropped)
}

/// A retrieved passage for unit tests: number `n`, chunk `n`, document `d{n}.md`.
#[cfg(test)]
pub(crate) fn test_source(n: usize, text: &str, similarity: f32) -> Source {
    Source {
        n,
        chunk_id: n as u64 * 10,
        document_id: format!("doc{n}"),
        document_name: format!("doc{n}.md"),
        kb_id: "kb".into(),
        page: Some(n as u32),
        page_end: Some(n as u32),
        heading_path: vec!["Ops".into()],
        similarity: Some(similarity),
        text: text.into(),
        excerpt: text.into(),
        table_header: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(n: usize, text: &str) -> Source {
        test_source(n, text, 0.5)
    }

    #[test]
    fn sentences_split_on_ends_and_lines() {
        let t = "One two. Three? Four\nfive 3.5 six";
        let s: Vec<&str> = sentences(t).iter().map(|&(a, b)| &t[a..b]).collect();
        assert_eq!(s, vec!["One two.", "Three?", "Four", "five 3.5 six"]);
    }

    #[test]
    fn markers_are_checked_against_sources() {
        let sources = vec![
            source(1, "The nightly backup runs at 02:00 UTC. It keeps 30 days."),
            source(2, "Uploads are limited to 50 MiB per file."),
        ];
        let answer =
            "The backup runs at 02:00 [1]. Files may be 50 MiB [2: \"limited to 50 MiB\"]. \
                      Cats purr [2]. Made up [7]. Bad quote [1: \"runs at midnight\"].";
        let (cited, dropped) = verify(answer, &sources);
        assert_eq!(cited.len(), 2, "{cited:?}");
        assert_eq!(cited[0].quote, "The nightly backup runs at 02:00 UTC.");
        assert_eq!(cited[0].page, Some(1));
        assert_eq!(cited[1].quote, "limited to 50 MiB");
        assert_eq!(
            &sources[1].text[cited[1].quote_start..cited[1].quote_end],
            "limited to 50 MiB"
        );
        let reasons: Vec<(usize, &str)> =
            dropped.iter().map(|d| (d.n, d.reason.as_str())).collect();
        assert_eq!(
            reasons,
            vec![
                (2, "unsupported"),
                (7, "not_retrieved"),
                (1, "quote_not_in_source")
            ]
        );
    }

    #[test]
    fn answers_without_markers_get_inferred_citations() {
        let sources = vec![
            source(
                1,
                "Invoices are sent on the first working day of the month.",
            ),
            source(
                2,
                "The nightly backup runs at 02:00 UTC and keeps thirty days of data.",
            ),
        ];
        let (cited, dropped) = verify("The nightly backup runs at 02:00 UTC.", &sources);
        assert!(dropped.is_empty());
        assert_eq!(cited.len(), 1);
        assert!(cited[0].inferred);
        assert_eq!(cited[0].n, 2);
        let (none, _) = verify("I like turtles very much.", &sources);
        assert!(none.is_empty());
    }

    #[test]
    fn excerpts_keep_the_best_sentences_within_budget() {
        let text = "Alpha beta gamma. The backup runs nightly at two. Delta epsilon zeta eta. \
                    Theta iota kappa lambda mu.";
        let e = excerpt(text, "when does the backup run", 10);
        assert!(e.contains("The backup runs nightly at two."), "{e}");
        assert!(estimate_tokens(&e) <= 10, "{e}");
        assert_eq!(excerpt("short", "q", 10), "short");
        let long = "x".repeat(100);
        assert!(excerpt(&long, "q", 5).len() <= 5 * 4 + '…'.len_utf8());
    }

    #[test]
    fn quotes_match_across_white_space_and_case() {
        let t = "Keep   the Keys\nin the vault.";
        let (s, e) = find_quote(t, "keep the keys in the vault").expect("found");
        assert_eq!(&t[s..e], "Keep   the Keys\nin the vault");
        assert!(find_quote(t, "keys in the safe").is_none());
    }
}
