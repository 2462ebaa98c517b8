//! Answer evaluation on SQuAD-style data (`corpus.jsonl` + `questions.jsonl`, the layout of
//! `eval/squad-dev`): reading the set, choosing the questions (split by article, seeded
//! sample), scoring one answer, and the report over all of them.
//!
//! Pure: the caller runs the agent turns (the same code path as the chat API) and hands each
//! answer in. Must never tune anything on what it reports.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::EvalError;

/// One paragraph of the corpus.
#[derive(Debug, Clone, Deserialize)]
pub struct Paragraph {
    /// `Article/i`.
    #[serde(rename = "_id")]
    pub id: String,
    /// Article title.
    #[serde(default)]
    pub title: String,
    /// The paragraph.
    pub text: String,
}

/// One question.
#[derive(Debug, Clone, Deserialize)]
pub struct Question {
    /// Question id.
    pub id: String,
    /// The question.
    pub question: String,
    /// False when the paragraphs do not answer it.
    pub answerable: bool,
    /// Gold answer spans (empty when unanswerable).
    #[serde(default)]
    pub answers: Vec<String>,
    /// `_id` of the paragraph it was written on.
    pub paragraph: String,
    /// Article title.
    #[serde(default)]
    pub article: String,
}

/// Which questions to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// Every question.
    All,
    /// Questions of the articles at even positions (in order of first appearance): the
    /// part weights and thresholds are tuned on.
    Tune,
    /// The other articles: never tuned on.
    HeldOut,
}

/// A data set in memory.
pub struct AnswerSet {
    /// Paragraphs.
    pub corpus: Vec<Paragraph>,
    /// Questions.
    pub questions: Vec<Question>,
}

fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, EvalError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EvalError::Dataset(format!("{}: {e}", path.display())))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| EvalError::Dataset(format!("{} line {}: {e}", path.display(), i + 1)))
        })
        .collect()
}

impl AnswerSet {
    /// Reads `dir/corpus.jsonl` and `dir/questions.jsonl`.
    pub fn load(dir: &Path) -> Result<Self, EvalError> {
        Ok(Self {
            corpus: read_jsonl(&dir.join("corpus.jsonl"))?,
            questions: read_jsonl(&dir.join("questions.jsonl"))?,
        })
    }

    /// The questions of `split`, then at most `limit` of them drawn with `seed` (in file
    /// order when no limit is given).
    pub fn select(&self, split: Split, limit: Option<usize>, seed: u64) -> Vec<Question> {
        let mut articles: Vec<&str> = Vec::new();
        for q in &self.questions {
            if !articles.contains(&q.article.as_str()) {
                articles.push(&q.article);
            }
        }
        let tune: HashSet<&str> = articles.iter().step_by(2).copied().collect();
        let mut out: Vec<Question> = self
            .questions
            .iter()
            .filter(|q| match split {
                Split::All => true,
                Split::Tune => tune.contains(q.article.as_str()),
                Split::HeldOut => !tune.contains(q.article.as_str()),
            })
            .cloned()
            .collect();
        if let Some(n) = limit.filter(|&n| n < out.len()) {
            // A seeded shuffle (splitmix64 keys), then the first n in file order.
            let mut keyed: Vec<(u64, usize)> = (0..out.len())
                .map(|i| (splitmix(seed ^ (i as u64).wrapping_mul(0x9E37_79B9)), i))
                .collect();
            keyed.sort_unstable();
            let mut keep: Vec<usize> = keyed[..n].iter().map(|&(_, i)| i).collect();
            keep.sort_unstable();
            out = keep.into_iter().map(|i| out[i].clone()).collect();
        }
        out
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// SQuAD's answer normalisation: lower case, punctuation and articles removed, white space
/// collapsed.
pub fn normalize(text: &str) -> String {
    let lower = text.to_lowercase();
    let no_punct: String = lower
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c.is_whitespace() {
                c
            } else {
                ' '
            }
        })
        .collect();
    no_punct
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// True when normalised `answer` holds normalised `gold` as whole words.
pub fn contains_span(answer: &str, gold: &str) -> bool {
    let (a, g) = (normalize(answer), normalize(gold));
    !g.is_empty() && format!(" {a} ").contains(&format!(" {g} "))
}

/// One answered question, as scored.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Question id.
    pub id: String,
    /// Whether it was answerable.
    pub answerable: bool,
    /// The agent said "not found".
    pub abstained: bool,
    /// The answer holds a gold span.
    pub contains_gold: bool,
    /// A citation points at the gold paragraph.
    pub cited_gold: bool,
    /// Words of the answer (citation markers excluded).
    pub words: usize,
    /// Whole turn, ms.
    pub total_ms: f64,
    /// Retrieval, ms.
    pub retrieval_ms: f64,
    /// Grounding (units, embedding, choice, checks), ms.
    pub grounding_ms: f64,
    /// Supported sentences / sentences.
    pub grounded_share: f32,
    /// Calibrated answerability.
    pub support: f32,
    /// The answerability features.
    pub features: Vec<f32>,
    /// Paragraph ids of the retrieved passages, best first.
    pub retrieved: Vec<String>,
    /// Paragraph ids the answer cites, in answer order.
    pub cited: Vec<String>,
}

/// What an answer needs for scoring.
pub struct Answer<'a> {
    /// Text (with markers).
    pub text: &'a str,
    /// The agent judged the question answerable.
    pub found: bool,
    /// Paragraph ids (`_id`) the citations point at.
    pub cited: Vec<String>,
}

/// Scores one answer.
pub fn score(q: &Question, a: &Answer<'_>) -> (bool, bool, bool, usize) {
    let plain = crate::agent::cite::strip_markers(a.text);
    let abstained = !a.found;
    let contains = !abstained && q.answers.iter().any(|g| contains_span(&plain, g));
    let cited = !abstained && a.cited.contains(&q.paragraph);
    (abstained, contains, cited, plain.split_whitespace().count())
}

/// The report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Questions asked.
    pub questions: usize,
    /// Answerable ones.
    pub answerable: usize,
    /// Unanswerable ones.
    pub unanswerable: usize,
    /// Answerable questions whose answer holds a gold span.
    pub contains_gold: f64,
    /// Answerable questions whose citations include the gold paragraph.
    pub cited_gold: f64,
    /// Unanswerable questions answered "not found".
    pub abstain_ok: f64,
    /// Answerable questions answered "not found".
    pub false_abstain: f64,
    /// Words of the answers that were not "not found": median and 90th percentile.
    pub words_p50: f64,
    /// 90th percentile of answer words.
    pub words_p90: f64,
    /// Turn latency, ms.
    pub latency_p50_ms: f64,
    /// 90th percentile of turn latency.
    pub latency_p90_ms: f64,
    /// Grounding latency (on top of retrieval), ms.
    pub grounding_p50_ms: f64,
    /// 90th percentile of grounding latency.
    pub grounding_p90_ms: f64,
    /// Mean share of supported sentences over the answers given.
    pub grounded_share: f64,
}

/// The `q` quantile of `v` (nearest rank); 0 for an empty list.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
    s[i]
}

impl Report {
    /// Aggregates the outcomes.
    pub fn of(outcomes: &[Outcome]) -> Self {
        let ans: Vec<&Outcome> = outcomes.iter().filter(|o| o.answerable).collect();
        let un: Vec<&Outcome> = outcomes.iter().filter(|o| !o.answerable).collect();
        let share = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f64 / d as f64 };
        let given: Vec<&Outcome> = outcomes.iter().filter(|o| !o.abstained).collect();
        let words: Vec<f64> = given.iter().map(|o| o.words as f64).collect();
        let lat: Vec<f64> = outcomes.iter().map(|o| o.total_ms).collect();
        let ground: Vec<f64> = outcomes.iter().map(|o| o.grounding_ms).collect();
        Report {
            questions: outcomes.len(),
            answerable: ans.len(),
            unanswerable: un.len(),
            contains_gold: share(ans.iter().filter(|o| o.contains_gold).count(), ans.len()),
            cited_gold: share(ans.iter().filter(|o| o.cited_gold).count(), ans.len()),
            abstain_ok: share(un.iter().filter(|o| o.abstained).count(), un.len()),
            false_abstain: share(ans.iter().filter(|o| o.abstained).count(), ans.len()),
            words_p50: quantile(&words, 0.5),
            words_p90: quantile(&words, 0.9),
            latency_p50_ms: quantile(&lat, 0.5),
            latency_p90_ms: quantile(&lat, 0.9),
            grounding_p50_ms: quantile(&ground, 0.5),
            grounding_p90_ms: quantile(&ground, 0.9),
            grounded_share: if given.is_empty() {
                0.0
            } else {
                given.iter().map(|o| o.grounded_share as f64).sum::<f64>() / given.len() as f64
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(id: &str, article: &str) -> Question {
        Question {
            id: id.into(),
            question: "?".into(),
            answerable: true,
            answers: vec!["10th and 11th centuries".into()],
            paragraph: "Normans/0".into(),
            article: article.into(),
        }
    }

    #[test]
    fn squad_normalisation_and_span_containment() {
        assert_eq!(normalize("The  Normans, (in France)!"), "normans in france");
        assert!(contains_span(
            "They came in the 10th and 11th centuries [1].",
            "10th and 11th centuries"
        ));
        assert!(!contains_span("In 1100 they left.", "10"));
        assert!(!contains_span("anything", "the"));
    }

    #[test]
    fn splits_are_by_article_and_samples_are_seeded() {
        let set = AnswerSet {
            corpus: vec![],
            questions: (0..10)
                .map(|i| q(&i.to_string(), if i < 6 { "A" } else { "B" }))
                .collect(),
        };
        assert_eq!(set.select(Split::Tune, None, 0).len(), 6);
        assert_eq!(set.select(Split::HeldOut, None, 0).len(), 4);
        let a: Vec<String> = set
            .select(Split::All, Some(5), 7)
            .into_iter()
            .map(|q| q.id)
            .collect();
        let b: Vec<String> = set
            .select(Split::All, Some(5), 7)
            .into_iter()
            .map(|q| q.id)
            .collect();
        assert_eq!(a, b);
        assert_eq!(a.len(), 5);
    }

    #[test]
    fn the_report_counts_each_measure_on_its_own_questions() {
        let o = |answerable, abstained, contains| Outcome {
            id: String::new(),
            answerable,
            abstained,
            contains_gold: contains,
            cited_gold: contains,
            words: 10,
            total_ms: 5.0,
            retrieval_ms: 1.0,
            grounding_ms: 2.0,
            grounded_share: 1.0,
            support: 0.5,
            features: vec![],
            retrieved: vec![],
            cited: vec![],
        };
        let r = Report::of(&[
            o(true, false, true),
            o(true, true, false),
            o(false, true, false),
            o(false, false, false),
        ]);
        assert_eq!((r.answerable, r.unanswerable), (2, 2));
        assert_eq!(
            (r.contains_gold, r.abstain_ok, r.false_abstain),
            (0.5, 0.5, 0.5)
        );
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), 2.0);
    }
}
