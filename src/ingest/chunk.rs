//! Token-aware, structure-following chunking.
//!
//! A document is cut at headings first (a chunk never spans two sections), then packed from
//! paragraphs; a paragraph too long for one chunk is split at sentence ends, and a sentence too
//! long at word boundaries. Sizes are counted in the embedder's own tokens so that no chunk is
//! silently truncated by the model. Every chunk is also bounded in bytes, whatever the input: a
//! tokenizer may count a 300,000-character "word" (a base64 blob, minified code) as one unknown
//! token, so such a token is cut into pieces of at most [`TOKEN_PIECE_BYTES`] and a chunk never
//! exceeds [`ChunkingOptions::max_bytes`]. Every chunk records byte offsets that slice back to
//! exactly its text, its page range and its heading path, for citations.
//!
//! A table is a section of its own whose rows are never cut: its rows are packed whole, and a
//! chunk that does not begin with the table's header carries the header (and caption) as its
//! [`Chunk::context`], embedded and indexed with it but not part of its cited text; the
//! budget leaves room for it.

use serde::{Deserialize, Serialize};
use unicode_segmentation::UnicodeSegmentation;

use super::builder::Table;
use super::extracted::Extracted;
use crate::embed::TextTokenizer;
use crate::util::sha256_hex;

/// Anything that can say where the tokens of a text are (byte spans).
pub trait TokenSpans {
    /// Byte spans of the tokens of `text`, in order, without special tokens.
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)>;
}

impl TokenSpans for TextTokenizer {
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
        // A tokenizer error on valid UTF-8 does not happen with BERT-style tokenizers; fall back
        // to whitespace words so chunking still bounds its output.
        TextTokenizer::token_spans(self, text)
            .unwrap_or_else(|_| WhitespaceTokens.token_spans(text))
    }
}

/// Counts whitespace-separated words as tokens (for tests and tokenizer-less callers).
pub struct WhitespaceTokens;

impl TokenSpans for WhitespaceTokens {
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
        text.split_word_bound_indices()
            .filter(|(_, w)| !w.trim().is_empty())
            .map(|(i, w)| (i, i + w.len()))
            .collect()
    }
}

/// Longest byte span counted as one token: a longer tokenizer span (an unknown "word") counts
/// as one token per piece of this size, so counts never undershoot and cuts stay possible.
pub const TOKEN_PIECE_BYTES: usize = 64;

/// Bytes a chunk may hold per token of its budget: generous for any real text (English runs
/// at 4–6 bytes per token, CJK at 3), binding only on degenerate input.
pub const BYTES_PER_TOKEN: usize = 16;

/// Chunk size settings, in tokens of the embedder and in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkingOptions {
    /// Most tokens in one chunk, special tokens excluded. Keep it at or below the embedder's
    /// limit minus its special tokens (254 for all-MiniLM-L6-v2).
    pub max_tokens: usize,
    /// Tokens repeated from the end of a chunk at the start of the next one (within a section).
    pub overlap_tokens: usize,
    /// Most bytes in one chunk (at least [`TOKEN_PIECE_BYTES`]).
    pub max_bytes: usize,
}

impl ChunkingOptions {
    /// Options for a token budget; the byte bound is [`BYTES_PER_TOKEN`] per token.
    pub fn new(max_tokens: usize, overlap_tokens: usize) -> Self {
        Self {
            max_tokens,
            overlap_tokens,
            max_bytes: max_tokens * BYTES_PER_TOKEN,
        }
    }
}

impl Default for ChunkingOptions {
    fn default() -> Self {
        Self::new(254, 32)
    }
}

/// A piece of a document sized for the embedder, with what a citation needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// The document this chunk belongs to.
    pub document_id: String,
    /// Position of the chunk in its document, from 0.
    pub ordinal: u32,
    /// Byte offset of the chunk in the extracted text.
    pub start: usize,
    /// Byte offset one past the chunk's end.
    pub end: usize,
    /// Exactly `extracted.text[start..end]`.
    pub text: String,
    /// Tokens in `text` by the embedder's tokenizer (special tokens excluded).
    pub tokens: usize,
    /// First and last page (1-based) the chunk touches; `None` for documents without pages.
    pub pages: Option<(u32, u32)>,
    /// Titles of the headings enclosing the chunk, outermost first.
    pub heading_path: Vec<String>,
    /// SHA-256 of `text`, hex.
    pub hash: String,
    /// What the chunk needs to be understood but does not hold: the header row (and caption)
    /// of the table its rows belong to; empty otherwise. Embedded and indexed before `text`.
    #[serde(default)]
    pub context: String,
    /// Mean OCR confidence (0–100) of the pages it touches, when any was OCR'd.
    #[serde(default)]
    pub ocr_confidence: Option<f32>,
}

impl Chunk {
    /// What is embedded and indexed: the context (if any), a line break, the text.
    pub fn embed_text(&self) -> std::borrow::Cow<'_, str> {
        if self.context.is_empty() {
            std::borrow::Cow::Borrowed(&self.text)
        } else {
            std::borrow::Cow::Owned(format!("{}\n{}", self.context, self.text))
        }
    }
}

/// Splits extracted documents into chunks.
pub struct Chunker<'t, T: TokenSpans + ?Sized> {
    tokens: &'t T,
    options: ChunkingOptions,
}

#[derive(Debug, Clone, Copy)]
struct Atom {
    start: usize,
    end: usize,
    paragraph_end: bool,
    /// Cut inside a word: re-tokenised alone, such a piece may count differently.
    forced: bool,
}

impl Atom {
    fn new(start: usize, end: usize) -> Self {
        Self {
            start,
            end,
            paragraph_end: false,
            forced: false,
        }
    }
}

/// Token positions of one text, for counting tokens in any byte range.
struct Counter {
    spans: Vec<(usize, usize)>,
    max_bytes: usize,
    max_tokens: usize,
}

impl Counter {
    /// Counts `spans` of `text`, with spans over [`TOKEN_PIECE_BYTES`] cut into pieces (at
    /// character boundaries) that count one token each.
    fn new(text: &str, spans: Vec<(usize, usize)>, options: &ChunkingOptions) -> Self {
        let mut out = Vec::with_capacity(spans.len());
        for (mut s, e) in spans {
            while e - s > TOKEN_PIECE_BYTES {
                let mut cut = s + TOKEN_PIECE_BYTES;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                out.push((s, cut));
                s = cut;
            }
            out.push((s, e));
        }
        Self {
            spans: out,
            max_bytes: options.max_bytes,
            max_tokens: options.max_tokens,
        }
    }

    /// Whether `start..end` fits in one chunk (tokens and bytes).
    fn fits(&self, start: usize, end: usize) -> bool {
        end - start <= self.max_bytes && self.count(start, end) <= self.max_tokens
    }

    /// Tokens overlapping `start..end` (a token cut by the range counts, so counts never
    /// undershoot what the model will see).
    fn count(&self, start: usize, end: usize) -> usize {
        let first = self.spans.partition_point(|&(_, e)| e <= start);
        let last = self.spans.partition_point(|&(s, _)| s < end);
        last.saturating_sub(first)
    }
}

impl<'t, T: TokenSpans + ?Sized> Chunker<'t, T> {
    /// A chunker counting with `tokens`.
    pub fn new(tokens: &'t T, options: ChunkingOptions) -> Self {
        let options = ChunkingOptions {
            max_tokens: options.max_tokens.max(8),
            overlap_tokens: options.overlap_tokens.min(options.max_tokens / 2),
            max_bytes: options.max_bytes.max(TOKEN_PIECE_BYTES),
        };
        Self { tokens, options }
    }

    /// Cuts `doc` into chunks in document order.
    pub fn chunk(&self, document_id: &str, doc: &Extracted) -> Vec<Chunk> {
        let text = doc.text.as_str();
        let counter = Counter::new(text, self.tokens.token_spans(text), &self.options);
        let tables: Vec<&Table> = doc
            .tables
            .iter()
            .filter(|t| t.start < t.body && t.body < t.end && t.end <= text.len())
            .collect();
        let mut bounds: Vec<usize> = doc.headings.iter().map(|h| h.offset).collect();
        bounds.extend(tables.iter().flat_map(|t| [t.start, t.end]));
        bounds.push(0);
        bounds.push(text.len());
        bounds.sort_unstable();
        bounds.dedup();
        let mut chunks = Vec::new();
        for window in bounds.windows(2) {
            let (start, end) = (window[0], window[1]);
            let path = heading_path(doc, start);
            let (pieces, context) = match tables.iter().find(|t| t.start == start) {
                Some(table) => self.table_pieces(text, table, end, &counter),
                None => {
                    let atoms = self.atoms(text, start, end, &counter);
                    (self.pack(text, &atoms, &counter), String::new())
                }
            };
            for (a, b, forced) in pieces {
                let text_slice = &text[a..b];
                let pages = doc.page_at(a).zip(doc.page_at(b.saturating_sub(1).max(a)));
                chunks.push(Chunk {
                    document_id: document_id.to_owned(),
                    ordinal: chunks.len() as u32,
                    start: a,
                    end: b,
                    text: text_slice.to_owned(),
                    tokens: if forced {
                        self.tokens.token_spans(text_slice).len()
                    } else {
                        counter.count(a, b)
                    },
                    pages,
                    heading_path: path.clone(),
                    hash: sha256_hex(text_slice.as_bytes()),
                    // The first piece holds the header itself.
                    context: if a == start {
                        String::new()
                    } else {
                        context.clone()
                    },
                    ocr_confidence: pages.and_then(|p| doc.ocr_confidence(p)),
                });
            }
        }
        chunks
    }

    /// A table's rows packed whole into pieces; the budget of every piece leaves room for the
    /// header it repeats (returned), unless the header is more than half the budget (then it
    /// is not repeated). A row too long for one chunk is cut at words like any sentence.
    fn table_pieces(
        &self,
        text: &str,
        table: &Table,
        end: usize,
        counter: &Counter,
    ) -> (Vec<(usize, usize, bool)>, String) {
        let mut context = table.context(text);
        let context_tokens = self.tokens.token_spans(&context).len() + 1;
        let limit = self.options.max_tokens;
        let context_bytes = context.len() + 1;
        if context_tokens * 2 > limit || context_bytes * 2 > self.options.max_bytes {
            context.clear();
        }
        let (room, room_bytes) = if context.is_empty() {
            (limit, self.options.max_bytes)
        } else {
            (
                limit - context_tokens,
                self.options.max_bytes - context_bytes,
            )
        };
        let fits = |a: usize, b: usize| b - a <= room_bytes && counter.count(a, b) <= room;
        let mut rows: Vec<Atom> = Vec::new();
        let mut offset = table.start;
        for line in text[table.start..end].split_inclusive('\n') {
            let (s, e) = (offset, offset + line.len());
            offset = e;
            // The header and its rule are one unit: never separated.
            if s < table.body && table.start != s {
                if let Some(first) = rows.first_mut() {
                    first.end = trimmed(text, first.start, e).map_or(first.end, |r| r.1);
                }
                continue;
            }
            let Some((s, e)) = trimmed(text, s, e) else {
                continue;
            };
            if fits(s, e) {
                rows.push(Atom::new(s, e));
            } else {
                let narrow = Chunker {
                    tokens: self.tokens,
                    options: ChunkingOptions {
                        max_tokens: room,
                        overlap_tokens: 0,
                        max_bytes: room_bytes,
                    },
                };
                narrow.split_words(text, s, e, counter, &mut rows);
            }
        }
        let mut pieces = Vec::new();
        let mut i = 0;
        while i < rows.len() {
            let mut j = i + 1;
            while j < rows.len() && fits(rows[i].start, rows[j].end) {
                j += 1;
            }
            let forced = rows[i..j].iter().any(|a| a.forced);
            pieces.push((rows[i].start, rows[j - 1].end, forced));
            i = j;
        }
        (pieces, context)
    }

    /// Splits `text[start..end]` into atoms that each fit in a chunk.
    fn atoms(&self, text: &str, start: usize, end: usize, counter: &Counter) -> Vec<Atom> {
        let mut atoms = Vec::new();
        for (p_start, p_end) in paragraphs(text, start, end) {
            let before = atoms.len();
            if counter.fits(p_start, p_end) {
                atoms.push(Atom::new(p_start, p_end));
            } else {
                for (s_off, sentence) in text[p_start..p_end].split_sentence_bound_indices() {
                    let Some((s, e)) =
                        trimmed(text, p_start + s_off, p_start + s_off + sentence.len())
                    else {
                        continue;
                    };
                    if counter.fits(s, e) {
                        atoms.push(Atom::new(s, e));
                    } else {
                        self.split_words(text, s, e, counter, &mut atoms);
                    }
                }
            }
            if let Some(last) = atoms[before..].last_mut() {
                last.paragraph_end = true;
            }
        }
        atoms
    }

    /// Greedy word-boundary split of an over-long sentence; a single word longer than the limit
    /// is cut at token boundaries (the only place a cut inside a word is allowed).
    fn split_words(&self, text: &str, s: usize, e: usize, counter: &Counter, out: &mut Vec<Atom>) {
        let mut piece_start: Option<usize> = None;
        let mut piece_end = s;
        for (w_off, word) in text[s..e].split_word_bound_indices() {
            let (ws, we) = (s + w_off, s + w_off + word.len());
            if word.trim().is_empty() {
                continue;
            }
            if !counter.fits(ws, we) {
                if let Some(ps) = piece_start.take() {
                    out.push(Atom::new(ps, piece_end));
                }
                self.split_tokens(text, ws, we, counter, out);
                continue;
            }
            match piece_start {
                Some(ps) if !counter.fits(ps, we) => {
                    out.push(Atom::new(ps, piece_end));
                    piece_start = Some(ws);
                }
                Some(_) => {}
                None => piece_start = Some(ws),
            }
            piece_end = we;
        }
        if let Some(ps) = piece_start {
            out.push(Atom::new(ps, piece_end));
        }
    }

    fn split_tokens(&self, text: &str, s: usize, e: usize, counter: &Counter, out: &mut Vec<Atom>) {
        let limit = self.options.max_tokens;
        let first = counter.spans.partition_point(|&(_, te)| te <= s);
        let last = counter.spans.partition_point(|&(ts, _)| ts < e);
        // Token end offsets inside the word, as candidate cut points.
        let ends: Vec<usize> = counter.spans[first..last]
            .iter()
            .map(|&(_, te)| te.min(e))
            .collect();
        let up = |mut at: usize| {
            while !text.is_char_boundary(at) {
                at += 1;
            }
            at
        };
        let mut piece_start = s;
        while piece_start < e {
            let ahead = &ends[ends.partition_point(|&x| x <= piece_start)..];
            let end_of = |take: usize| ahead.get(take - 1).copied().unwrap_or(e);
            // Take up to `limit` tokens within the byte bound, then shrink while the piece,
            // tokenised alone, is over. A piece of an unknown "word" may tokenise alone into
            // many more tokens than it counted for; the last resort halves it in bytes.
            let mut take = limit.min(ahead.len()).max(1);
            while take > 1 && end_of(take) - piece_start > self.options.max_bytes {
                take -= 1;
            }
            let mut piece_end = up(end_of(take).max(piece_start + 1));
            while piece_end - piece_start > self.options.max_bytes {
                piece_end = up(piece_start + (piece_end - piece_start) / 2);
            }
            loop {
                let alone = self.tokens.token_spans(&text[piece_start..piece_end]).len();
                if alone <= limit {
                    break;
                }
                if take > 1 {
                    take -= (alone - limit).min(take - 1);
                    piece_end = up(end_of(take).max(piece_start + 1));
                } else {
                    let half = up(piece_start + ((piece_end - piece_start) / 2).max(1));
                    if half >= piece_end {
                        break; // one character: it cannot be cut further
                    }
                    piece_end = half;
                }
            }
            out.push(Atom {
                forced: true,
                ..Atom::new(piece_start, piece_end)
            });
            piece_start = piece_end;
        }
    }

    /// Packs atoms into byte ranges of at most `max_tokens` tokens, preferring paragraph ends.
    fn pack(&self, text: &str, atoms: &[Atom], counter: &Counter) -> Vec<(usize, usize, bool)> {
        let limit = self.options.max_tokens;
        let mut out = Vec::new();
        let mut i = 0;
        while i < atoms.len() {
            let mut j = i + 1;
            while j < atoms.len() && counter.fits(atoms[i].start, atoms[j].end) {
                j += 1;
            }
            // atoms[i..j] fit. Unless the section ends here, prefer to stop at a paragraph end
            // that keeps the chunk at least half full.
            let mut cut = j;
            if j < atoms.len() {
                if let Some(p) = (i + 1..j).rev().find(|&k| {
                    atoms[k - 1].paragraph_end
                        && counter.count(atoms[i].start, atoms[k - 1].end) * 2 >= limit
                }) {
                    cut = p;
                }
            }
            // A chunk holding a piece cut inside a word is checked by tokenising it alone.
            let forced = atoms[i..cut].iter().any(|a| a.forced);
            if forced {
                while cut - 1 > i
                    && self
                        .tokens
                        .token_spans(&text[atoms[i].start..atoms[cut - 1].end])
                        .len()
                        > limit
                {
                    cut -= 1;
                }
            }
            out.push((atoms[i].start, atoms[cut - 1].end, forced));
            if cut >= atoms.len() {
                break;
            }
            // Overlap: restart at the earliest atom whose tail up to the cut fits in the budget
            // and still leaves room for the next atom.
            let mut next = cut;
            while next > i + 1 {
                let candidate = next - 1;
                let tail = counter.count(atoms[candidate].start, atoms[cut - 1].end);
                if tail > self.options.overlap_tokens
                    || !counter.fits(atoms[candidate].start, atoms[cut].end)
                {
                    break;
                }
                next = candidate;
            }
            i = next;
        }
        out
    }
}

/// Non-blank paragraphs of `text[start..end]` as trimmed byte ranges.
fn paragraphs(text: &str, start: usize, end: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let section = &text[start..end];
    let mut para_start = 0;
    let mut offset = 0;
    for line in section.split_inclusive('\n') {
        if line.trim().is_empty() {
            if let Some(range) = trimmed(text, start + para_start, start + offset) {
                out.push(range);
            }
            para_start = offset + line.len();
        }
        offset += line.len();
    }
    if let Some(range) = trimmed(text, start + para_start, end) {
        out.push(range);
    }
    out
}

/// `start..end` without leading and trailing whitespace, or `None` when nothing is left.
fn trimmed(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let slice = &text[start..end];
    let lead = slice.len() - slice.trim_start().len();
    let body = slice.trim();
    (!body.is_empty()).then(|| (start + lead, start + lead + body.len()))
}

/// Titles of the headings in force at `section_start`, outermost first.
fn heading_path(doc: &Extracted, section_start: usize) -> Vec<String> {
    let mut stack: Vec<(u8, &str)> = Vec::new();
    for h in doc
        .headings
        .iter()
        .take_while(|h| h.offset <= section_start)
    {
        while stack.last().is_some_and(|(level, _)| *level >= h.level) {
            stack.pop();
        }
        stack.push((h.level, &h.title));
    }
    stack.into_iter().map(|(_, t)| t.to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::extract::Heading;
    use crate::ingest::extracted::from_pages;
    use crate::ingest::MediaType;
    use proptest::prelude::*;

    fn doc(text: &str, headings: Vec<Heading>) -> Extracted {
        let mut e = Extracted::plain(MediaType::Markdown, text.to_owned(), "markdown");
        e.headings = headings;
        e
    }

    #[test]
    fn table_rows_stay_whole_and_every_chunk_repeats_the_header() {
        let mut text =
            String::from("# Prices\n\nBefore the table.\n\n| Fruit | Price |\n|---|---|\n");
        for i in 0..200 {
            text.push_str(&format!("| fruit number {i} | {} |\n", i * 7));
        }
        text.push_str("\nAfter the table.\n");
        let (headings, tables) = crate::ingest::markdown::structure(&text);
        let mut d = doc(&text, headings);
        d.tables = tables;
        let max = 40;
        let chunks = Chunker::new(&WhitespaceTokens, opts(max, 8)).chunk("d", &d);
        let rows: Vec<&Chunk> = chunks
            .iter()
            .filter(|c| c.text.contains("fruit number"))
            .collect();
        assert!(rows.len() > 5, "{}", rows.len());
        assert!(rows[0].text.starts_with("| Fruit | Price |\n|---|---|"));
        assert!(rows[0].context.is_empty());
        for c in &rows[1..] {
            assert_eq!(c.context, "| Fruit | Price |\n|---|---|");
            assert!(
                c.text.starts_with("| fruit number") && c.text.ends_with(" |"),
                "{:?}",
                c.text
            );
            assert_eq!(&text[c.start..c.end], c.text);
            let total = WhitespaceTokens.token_spans(&c.embed_text()).len();
            assert!(total <= max, "{total} tokens");
        }
        let every_row = rows
            .iter()
            .map(|c| c.text.matches("fruit number").count())
            .sum::<usize>();
        assert_eq!(every_row, 200);
        assert!(!chunks
            .iter()
            .any(|c| c.text.contains("Before") && c.text.contains("fruit")));
        assert!(chunks
            .last()
            .expect("chunks")
            .text
            .contains("After the table."));
    }

    fn opts(max: usize, overlap: usize) -> ChunkingOptions {
        ChunkingOptions::new(max, overlap)
    }

    #[test]
    fn sections_are_never_mixed_and_carry_their_path() {
        let text = "# A\n\nalpha one.\n\n## B\n\nbeta two.\n\n# C\n\ngamma.";
        let headings = crate::ingest::markdown::structure(text).0;
        let chunks = Chunker::new(&WhitespaceTokens, opts(50, 0)).chunk("d", &doc(text, headings));
        let paths: Vec<_> = chunks.iter().map(|c| c.heading_path.join(" > ")).collect();
        assert_eq!(paths, vec!["A", "A > B", "C"]);
        assert!(chunks[1].text.starts_with("## B"));
    }

    #[test]
    fn long_paragraph_splits_at_sentences() {
        let text = "One two three four. Five six seven eight. Nine ten eleven twelve.";
        let chunks = Chunker::new(&WhitespaceTokens, opts(10, 0)).chunk("d", &doc(text, vec![]));
        assert!(chunks.len() >= 2);
        assert!(chunks.iter().all(|c| c.text.ends_with('.')), "{chunks:#?}");
    }

    #[test]
    fn pages_follow_offsets() {
        let extracted = from_pages(
            vec![
                "page one has six words".into(),
                "page two has six words".into(),
            ],
            vec![],
        );
        let chunks = Chunker::new(&WhitespaceTokens, opts(8, 0)).chunk("d", &extracted);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks.first().and_then(|c| c.pages), Some((1, 1)));
        assert_eq!(chunks.last().and_then(|c| c.pages), Some((2, 2)));
    }

    /// Issue 14, "chunks have no size bound": one 300,000-byte word, counted as one token by a
    /// whitespace tokenizer, still comes out as chunks within the byte bound, covering it all.
    #[test]
    fn chunks_have_no_size_bound_one_giant_word() {
        let text = "a".repeat(300_000);
        let options = opts(254, 32);
        let chunks = Chunker::new(&WhitespaceTokens, options).chunk("d", &doc(&text, vec![]));
        assert!(chunks.iter().all(|c| c.text.len() <= options.max_bytes));
        assert_eq!(chunks.first().map(|c| c.start), Some(0));
        assert_eq!(chunks.last().map(|c| c.end), Some(text.len()));
        assert!(chunks.windows(2).all(|w| w[0].end >= w[1].start));
    }

    #[test]
    fn a_giant_word_is_cut_at_token_bounds() {
        let text = "x".repeat(10);
        let chunks = Chunker::new(&CharTokens, opts(8, 0)).chunk("d", &doc(&text, vec![]));
        assert_eq!(chunks.iter().map(|c| c.text.len()).sum::<usize>(), 10);
        assert!(chunks.iter().all(|c| c.tokens <= 8));
    }

    /// One token per character: stresses the cut-inside-a-word path.
    struct CharTokens;
    impl TokenSpans for CharTokens {
        fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
            text.char_indices()
                .map(|(i, c)| (i, i + c.len_utf8()))
                .collect()
        }
    }

    fn check_invariants(
        text: &str,
        chunks: &[Chunk],
        limit: usize,
        overlap: usize,
        t: &dyn TokenSpans,
    ) {
        let mut covered = vec![false; text.len()];
        let mut last_start = None;
        for (i, c) in chunks.iter().enumerate() {
            assert_eq!(c.ordinal as usize, i);
            assert_eq!(
                &text[c.start..c.end],
                c.text,
                "offsets must slice back to the text"
            );
            assert!(
                c.tokens <= limit,
                "chunk {i} has {} > {limit} tokens",
                c.tokens
            );
            assert!(
                t.token_spans(&c.text).len() <= limit,
                "re-tokenised chunk over the limit"
            );
            let max_bytes = (limit * BYTES_PER_TOKEN).max(TOKEN_PIECE_BYTES);
            assert!(
                c.text.len() <= max_bytes,
                "chunk {i} has {} > {max_bytes} bytes",
                c.text.len()
            );
            assert!(
                last_start.is_none_or(|s| c.start > s),
                "chunks must advance"
            );
            if overlap == 0 {
                assert!(
                    i == 0 || chunks[i - 1].end <= c.start,
                    "no overlap was asked for"
                );
            }
            last_start = Some(c.start);
            covered[c.start..c.end].iter_mut().for_each(|b| *b = true);
        }
        for (i, ch) in text.char_indices() {
            if !ch.is_whitespace() {
                assert!(covered[i], "byte {i} ({ch:?}) is in no chunk");
            }
        }
    }

    fn text_strategy() -> impl Strategy<Value = String> {
        let word = prop_oneof![
            "[a-z]{1,12}",
            "[A-Z][a-z]{0,8}[.!?]",
            Just("\n\n".to_owned()),
            Just("\n# Heading\n".to_owned()),
            Just("café".to_owned()),
            Just("東京".to_owned()),
            "[a-z]{30,60}",
            // Degenerate input: giant "words", base64 blobs, CJK without spaces, minified code.
            "[a-z]{200,3000}",
            "[A-Za-z0-9+/]{100,2000}={0,2}",
            "[\u{4e00}-\u{9fff}]{50,600}",
            "([a-z]{1,4}[;{}(),.=]){20,300}",
        ];
        prop::collection::vec(word, 0..300).prop_map(|w| w.join(" "))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn chunks_cover_in_order_within_limit(text in text_strategy(), max in 8usize..64, overlap in 0usize..16) {
            let headings = crate::ingest::markdown::structure(&text).0;
            let d = doc(&text, headings);
            for tokens in [&WhitespaceTokens as &dyn TokenSpans, &CharTokens] {
                let chunks = Chunker::new(tokens, opts(max, overlap)).chunk("d", &d);
                check_invariants(&text, &chunks, max, overlap.min(max / 2), tokens);
            }
        }

        #[test]
        fn table_rows_stay_whole_with_their_header(
            rows in proptest::collection::vec(proptest::collection::vec("[a-z0-9]{1,12}", 1..5), 1..120),
            max in 12usize..80,
            caption in proptest::option::of("[A-Z][a-z]{0,10}"),
        ) {
            let mut b = crate::ingest::builder::Builder::new();
            b.paragraph("Intro paragraph before the table.");
            let mut all = vec![vec!["Key".to_owned(), "Value".to_owned()]];
            all.extend(rows.iter().cloned());
            b.table(caption.as_deref(), &all, true);
            b.paragraph("Closing words.");
            let built = b.finish();
            let mut d = doc(&built.text, built.headings);
            d.tables = built.tables;
            let text = d.text.clone();
            for tokens in [&WhitespaceTokens as &dyn TokenSpans, &CharTokens] {
                let chunks = Chunker::new(tokens, opts(max, 4)).chunk("d", &d);
                let Some(table) = d.tables.first() else { continue };
                let body: Vec<&str> = text[table.body..table.end].lines().collect();
                let mut seen = Vec::new();
                for c in &chunks {
                    prop_assert_eq!(&text[c.start..c.end], c.text.as_str());
                    let inside = c.start >= table.start && c.end <= table.end;
                    prop_assert!(inside || c.end <= table.start || c.start >= table.end,
                        "a chunk mixes table rows and other text: {:?}", c.text);
                    if !inside {
                        prop_assert!(c.context.is_empty());
                        continue;
                    }
                    seen.extend(c.text.lines().filter(|l| body.contains(l)).map(str::to_owned));
                    if c.start > table.start && !c.context.is_empty() {
                        prop_assert_eq!(&c.context, &table.context(&text));
                        let total = tokens.token_spans(&c.embed_text()).len();
                        prop_assert!(total <= max, "{} tokens with the header", total);
                    }
                }
                // Rows that fit a chunk are never cut: each appears whole, once, in order.
                let fitting: Vec<&str> = body
                    .iter()
                    .copied()
                    .filter(|r| tokens.token_spans(r).len() * 2 <= max && r.len() * 2 <= max * BYTES_PER_TOKEN)
                    .collect();
                for r in fitting {
                    prop_assert!(seen.iter().any(|s| s == r), "row {:?} cut or lost", r);
                }
            }
        }
    }
}
