//! Chunk invariants with the default model's real tokenizer.

use groundwork::embed::Embedder;
use groundwork::ingest::isolate::Isolation;
use groundwork::ingest::{extract, Chunk, Chunker, ChunkingOptions, ExtractOptions, Extracted};
use proptest::prelude::*;

use crate::common;

fn check(doc: &Extracted, chunks: &[Chunk], limit: usize) {
    let tokenizer = common::embedder().tokenizer();
    let mut covered = vec![false; doc.text.len()];
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(doc.text[c.start..c.end], c.text);
        let real = tokenizer.count(&c.text).expect("count");
        assert!(real <= limit, "chunk {i}: {real} tokens > {limit}");
        let bytes = limit * groundwork::ingest::chunk::BYTES_PER_TOKEN;
        assert!(
            c.text.len() <= bytes,
            "chunk {i}: {} bytes > {bytes}",
            c.text.len()
        );
        assert!(i == 0 || chunks[i - 1].start < c.start);
        assert!(!c.text.starts_with(char::is_whitespace) && !c.text.ends_with(char::is_whitespace));
        covered[c.start..c.end].iter_mut().for_each(|b| *b = true);
    }
    for (i, ch) in doc.text.char_indices() {
        assert!(ch.is_whitespace() || covered[i], "byte {i} uncovered");
    }
}

fn markdown(text: &str) -> Extracted {
    let options = ExtractOptions {
        isolation: Isolation::with_program(common::bin()),
        password: None,
    };
    extract(text.as_bytes(), Some("doc.md"), &options).expect("markdown")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]
    #[test]
    fn real_tokenizer_chunks_respect_the_model_limit(
        words in prop::collection::vec(prop_oneof![
            "[a-zA-Z]{1,14}", "[0-9]{1,6}", Just("naïveté".to_owned()), Just("東京都庁".to_owned()),
            Just("\n\n".to_owned()), Just("\n## Section\n".to_owned()), Just("fn main() {}".to_owned()),
            "[a-z]{40,80}",
            // Degenerate input: the tokenizer's unknown-word path, base64, CJK runs, minified code.
            "[a-z]{150,4000}", "[A-Za-z0-9+/]{200,3000}", "[\\u{4e00}-\\u{9fff}]{100,800}",
            "([a-z]{1,4}[;{}(),.=]){50,400}",
        ], 1..600),
        max in 16usize..254,
    ) {
        let text = format!("# Title\n\n{}", words.join(" "));
        let doc = markdown(&text);
        let chunks = Chunker::new(common::embedder().tokenizer(), ChunkingOptions::new(max, max / 8)).chunk("d", &doc);
        check(&doc, &chunks, max);
    }
}

#[test]
fn rust_book_chunks_keep_headings_and_limits() {
    let Some(dir) = common::shared("docs/rust-book") else {
        return;
    };
    let embedder = common::embedder();
    let limit = embedder.max_tokens() - embedder.tokenizer().special_tokens();
    let chunker = Chunker::new(embedder.tokenizer(), ChunkingOptions::default());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let mut total = 0;
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .take(12)
    {
        let doc = markdown(&std::fs::read_to_string(path).expect("read"));
        let chunks = chunker.chunk("d", &doc);
        check(&doc, &chunks, limit);
        if !doc.headings.is_empty() {
            assert!(
                chunks.iter().any(|c| !c.heading_path.is_empty()),
                "{}",
                path.display()
            );
        }
        total += chunks.len();
    }
    assert!(total > 12);
}
