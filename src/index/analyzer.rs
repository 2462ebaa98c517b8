//! Text analysis for BM25: lower-casing, word splitting, English stop words, Snowball stemming,
//! and character bigrams for CJK scripts (which do not separate words with spaces).

use rust_stemmers::{Algorithm, Stemmer};

/// Lucene's English stop words (the set Anserini's BM25 baselines use).
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
];

/// Turns text into index terms.
pub struct Analyzer {
    stemmer: Stemmer,
}

impl Default for Analyzer {
    fn default() -> Self {
        Self {
            stemmer: Stemmer::create(Algorithm::English),
        }
    }
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF)
}

impl Analyzer {
    /// Calls `emit` with every term of `text`, in order.
    pub fn for_each_term(&self, text: &str, mut emit: impl FnMut(&str)) {
        let mut word = String::new();
        let flush = |word: &mut String, emit: &mut dyn FnMut(&str)| {
            if word.is_empty() {
                return;
            }
            if word.chars().any(is_cjk) {
                let chars: Vec<char> = word.chars().collect();
                if chars.len() == 1 {
                    emit(word);
                }
                for pair in chars.windows(2) {
                    emit(&pair.iter().collect::<String>());
                }
            } else if !STOP_WORDS.contains(&word.as_str()) {
                emit(&self.stemmer.stem(word));
            }
            word.clear();
        };
        for c in text.chars() {
            if c.is_alphanumeric() {
                if !word.is_empty() && is_cjk(c) != word.chars().last().is_some_and(is_cjk) {
                    flush(&mut word, &mut emit);
                }
                word.extend(c.to_lowercase());
            } else {
                flush(&mut word, &mut emit);
            }
        }
        flush(&mut word, &mut emit);
    }

    /// The terms of `text` as owned strings.
    pub fn terms(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.for_each_term(text, |t| out.push(t.to_owned()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_and_drops_stop_words() {
        let a = Analyzer::default();
        assert_eq!(
            a.terms("The Running of the Dogs, in 2024!"),
            vec!["run", "dog", "2024"]
        );
    }

    #[test]
    fn cjk_becomes_bigrams() {
        let a = Analyzer::default();
        assert_eq!(a.terms("東京都 tokyo"), vec!["東京", "京都", "tokyo"]);
    }
}
