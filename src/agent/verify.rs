//! Claim verification of generated answers. A sentence of the answer is `supported` only if a
//! unit of a retrieved passage supports it: embedding similarity at or above the calibrated
//! `claim_similarity`, AND every number, date, quoted string, identifier and capitalised name
//! of the sentence occurs in that unit's passage. Shared words are not support: a sentence
//! that names something the passages never mention is unsupported however similar it reads.
//!
//! Pure: vectors come in from the caller; no model, no I/O.

use serde::{Deserialize, Serialize};

use super::cite::{self, Source};
use super::extract::{key_tokens, token_in, word_set, Candidates};

/// One sentence of an answer, checked against the passages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Claim {
    /// The sentence (citation markers removed).
    pub text: String,
    /// Byte offset of the sentence in the answer.
    pub start: usize,
    /// End of the sentence in the answer.
    pub end: usize,
    /// True when a passage supports it.
    pub supported: bool,
    /// Number of the source of its best support.
    pub n: Option<usize>,
    /// Chunk of its best support.
    pub chunk_id: Option<u64>,
    /// Byte range of the supporting unit in that chunk.
    pub support_start: Option<usize>,
    /// End of the supporting unit.
    pub support_end: Option<usize>,
    /// Embedding similarity to the best support.
    pub similarity: f32,
    /// Names, numbers and identifiers of the sentence that the passage does not contain.
    pub missing: Vec<String>,
}

/// Sentences of `answer` worth checking: byte ranges and their text without markers.
pub fn claim_sentences(answer: &str) -> Vec<(usize, usize, String)> {
    cite::sentences(answer)
        .into_iter()
        .filter_map(|(s, e)| {
            let stripped = cite::strip_markers(&answer[s..e]);
            let text = stripped
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .replace(" .", ".")
                .replace(" ,", ",");
            let text = text.trim();
            // Fences, bare markers and one-word fragments ("Yes.") claim nothing.
            let words = text.split_whitespace().count();
            (words >= 3 && !text.starts_with("```")).then(|| (s, e, text.to_owned()))
        })
        .collect()
}

/// Checks each claim. `similarity(j, i)` is claim `j`'s cosine to unit `i` of `cands`.
pub fn check(
    claims: &[(usize, usize, String)],
    sources: &[Source],
    cands: &Candidates,
    similarity: impl Fn(usize, usize) -> f32,
    threshold: f32,
) -> Vec<Claim> {
    let passages: Vec<(std::collections::HashSet<String>, String)> = sources
        .iter()
        .map(|s| (word_set(&s.text), s.text.to_lowercase()))
        .collect();
    claims
        .iter()
        .enumerate()
        .map(|(j, (start, end, text))| {
            let keys = key_tokens(text);
            // The most similar unit whose passage holds every key token; else the most
            // similar unit, to say what is missing.
            let mut ranked: Vec<(usize, f32)> = (0..cands.units.len())
                .map(|i| (i, similarity(j, i)))
                .collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let missing_in = |i: usize| -> Vec<String> {
                let (words, lower) = &passages[cands.units[i].0];
                keys.iter()
                    .filter(|k| !token_in(k, words, lower))
                    .cloned()
                    .collect()
            };
            let holding = ranked
                .iter()
                .find(|(i, sim)| *sim >= threshold && missing_in(*i).is_empty());
            let (best, sim, missing) = match (holding, ranked.first()) {
                (Some(&(i, s)), _) => (Some(i), s, Vec::new()),
                (None, Some(&(i, s))) => (Some(i), s, missing_in(i)),
                (None, None) => (None, 0.0, keys.clone()),
            };
            let supported = holding.is_some();
            let unit = best.map(|i| &cands.units[i]);
            Claim {
                text: text.clone(),
                start: *start,
                end: *end,
                supported,
                n: unit.map(|(src, _)| sources[*src].n),
                chunk_id: unit.map(|(src, _)| sources[*src].chunk_id),
                support_start: unit.map(|(_, u)| u.start),
                support_end: unit.map(|(_, u)| u.end),
                similarity: sim,
                missing,
            }
        })
        .collect()
}

/// Share of claims supported (1 when there is nothing to check).
pub fn grounded_share(claims: &[Claim]) -> f32 {
    if claims.is_empty() {
        return 1.0;
    }
    claims.iter().filter(|c| c.supported).count() as f32 / claims.len() as f32
}

/// `answer` without its unsupported sentences.
pub fn without_unsupported(answer: &str, claims: &[Claim]) -> String {
    let mut out = String::new();
    let mut at = 0;
    for c in claims.iter().filter(|c| !c.supported) {
        out.push_str(&answer[at..c.start]);
        at = c.end;
    }
    out.push_str(&answer[at..]);
    // Fold the gaps the removed sentences left.
    let mut folded = String::new();
    for line in out.lines() {
        let l = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.trim_start().starts_with("```") || !l.is_empty() || !folded.ends_with("\n\n") {
            folded.push_str(if l.is_empty() { "" } else { line.trim_end() });
            folded.push('\n');
        }
    }
    folded.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::extract::candidates;

    fn source(n: usize, text: &str) -> Source {
        crate::agent::cite::test_source(n, text, 0.5)
    }

    #[test]
    fn a_similar_sentence_naming_what_the_passage_lacks_is_unsupported() {
        let sources = vec![source(
            1,
            "Groundwork embeds passages with all-MiniLM-L6-v2 by default. Vectors have 384 \
             dimensions.",
        )];
        let cands = candidates(&sources);
        let answer = "The default embedding model is all-MiniLM-L6-v2 [1]. It is called LINQ, \
                      which stands for Listing Niner. Vectors have 512 dimensions [1].";
        let claims = claim_sentences(answer);
        assert_eq!(claims.len(), 3);
        // Every claim reads close to some unit: only the tokens decide.
        let checked = check(&claims, &sources, &cands, |_, _| 0.9, 0.6);
        let verdict: Vec<bool> = checked.iter().map(|c| c.supported).collect();
        assert_eq!(verdict, vec![true, false, false], "{checked:?}");
        assert_eq!(checked[1].missing, vec!["linq", "listing", "niner"]);
        assert_eq!(checked[2].missing, vec!["512"]);
        assert!((grounded_share(&checked) - 1.0 / 3.0).abs() < 1e-6);
        // Low similarity alone is enough to refuse.
        let low = check(&claims[..1], &sources, &cands, |_, _| 0.2, 0.6);
        assert!(!low[0].supported);
        let kept = without_unsupported(answer, &checked);
        assert_eq!(kept, "The default embedding model is all-MiniLM-L6-v2 [1].");
    }
}
