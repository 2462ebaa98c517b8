//! Extractive answers: the answer is made only of verbatim units (sentences, list items, table
//! rows, code with its introduction) of the retrieved passages, chosen for the question.
//!
//! Each unit is scored by its embedding similarity to the question, the share of the
//! question's (IDF-weighted, stemmed) terms it holds, the retrieval similarity of its passage,
//! and whether it holds what the question asks for (a date for "when", a number for "how
//! many", a name for "who"). The best unit comes first; supporting units follow by maximal
//! marginal relevance (relevant, unlike what is already said) while they score at least
//! `support_ratio` of the best and fit the word budget. Whether the passages answer the
//! question at all is a separate, calibrated score over the best unit and its passage
//! ([`Composition::support`]); below the agent's `min_support` the answer is "not found". A
//! passage sharing no term with the question never supports it.
//!
//! Pure: vectors come in from the caller; no model, no I/O.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use super::cite::{Citation, Source};
use super::config::{GroundingConfig, ANSWERABILITY_FEATURES};
use super::spans::{self, Unit, UnitKind};
use crate::index::analyzer::Analyzer;

/// Words that shape a question but say nothing about its subject.
const QUESTION_WORDS: &[&str] = &[
    "what", "who", "whom", "whose", "when", "where", "which", "why", "how", "did", "does", "do",
    "can", "could", "would", "should", "is", "was", "were", "are", "has", "have", "had", "name",
    "i", "you", "we", "my", "me", "s",
];

fn analyzer() -> &'static Analyzer {
    static A: OnceLock<Analyzer> = OnceLock::new();
    A.get_or_init(Analyzer::default)
}

fn question_terms() -> &'static HashSet<String> {
    static S: OnceLock<HashSet<String>> = OnceLock::new();
    S.get_or_init(|| {
        QUESTION_WORDS
            .iter()
            .flat_map(|w| analyzer().terms(w))
            .collect()
    })
}

/// Stemmed content terms of a question, in order, without repeats.
fn terms_of_question(q: &str) -> Vec<String> {
    let skip = question_terms();
    let mut seen = HashSet::new();
    analyzer()
        .terms(q)
        .into_iter()
        .filter(|t| !skip.contains(t) && seen.insert(t.clone()))
        .collect()
}

/// What a question asks for, by its opening words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A date or period ("when", "what year", "which century").
    Time,
    /// A quantity ("how many", "how much", "what percentage").
    Number,
    /// A person or named thing ("who").
    Name,
    /// Anything.
    Any,
}

/// The answer type a question expects.
pub fn expect(question: &str) -> Expect {
    let q = question.to_lowercase();
    let has = |w: &str| q.split(|c: char| !c.is_alphanumeric()).any(|x| x == w);
    if has("when")
        || [
            "what year",
            "which year",
            "what century",
            "which century",
            "what decade",
            "what date",
            "what time",
        ]
        .iter()
        .any(|p| q.contains(p))
    {
        Expect::Time
    } else if [
        "how many",
        "how much",
        "how long",
        "how old",
        "how far",
        "how large",
        "how big",
        "what percentage",
        "what percent",
        "what number",
    ]
    .iter()
    .any(|p| q.contains(p))
    {
        Expect::Number
    } else if has("who") || has("whom") || has("whose") {
        Expect::Name
    } else {
        Expect::Any
    }
}

const MONTHS: &[&str] = &[
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
    "century",
    "centuries",
    "decade",
    "year",
    "years",
];

const NUMBER_WORDS: &[&str] = &[
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "hundred",
    "hundreds",
    "thousand",
    "thousands",
    "million",
    "millions",
    "billion",
    "dozen",
    "several",
    "half",
];

/// +1 when `text` holds something of the expected kind that the question does not already
/// say, -1 when it holds nothing of it, 0 for questions that expect anything.
fn type_evidence(expect: Expect, text: &str, question: &str) -> f32 {
    if expect == Expect::Any {
        return 0.0;
    }
    let qwords: HashSet<String> = question
        .split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .collect();
    let words: Vec<&str> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let new = |w: &str| !qwords.contains(&w.to_lowercase());
    let found = match expect {
        Expect::Time => words.iter().filter(|w| new(w)).any(|w| {
            w.chars().any(|c| c.is_ascii_digit()) || MONTHS.contains(&w.to_lowercase().as_str())
        }),
        Expect::Number => words.iter().filter(|w| new(w)).any(|w| {
            w.chars().any(|c| c.is_ascii_digit())
                || NUMBER_WORDS.contains(&w.to_lowercase().as_str())
        }),
        Expect::Name => words
            .iter()
            .enumerate()
            .filter(|(_, w)| new(w))
            .any(|(i, w)| i > 0 && w.chars().next().is_some_and(char::is_uppercase)),
        Expect::Any => false,
    };
    if found {
        1.0
    } else {
        -1.0
    }
}

/// Tokens of `text` that a supporting passage must contain as they are: numbers, quoted or
/// back-ticked strings, identifiers (`snake_case`, `a.b`, `a/b`, `--flag`, `CamelCase`), and
/// capitalised names that do not open the sentence. Lower-cased.
pub fn key_tokens(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |s: &str| {
        let s = s
            .trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase();
        if !s.is_empty() && !out.contains(&s) {
            out.push(s);
        }
    };
    // Quoted and code strings whole.
    for q in ['"', '`', '“'] {
        let close = if q == '“' { '”' } else { q };
        let mut rest = text;
        while let Some(a) = rest.find(q) {
            let after = &rest[a + q.len_utf8()..];
            let Some(b) = after.find(close) else { break };
            let inner = &after[..b];
            if !inner.trim().is_empty() && inner.len() <= 120 {
                push(inner);
            }
            rest = &after[b + close.len_utf8()..];
        }
    }
    let mut first = true;
    for raw in text.split_whitespace() {
        let w = raw.trim_matches(|c: char| !c.is_alphanumeric() && c != '-' && c != '_');
        // A possessive names its owner: "Robert's" is "Robert".
        let w = w
            .strip_suffix("'s")
            .or_else(|| w.strip_suffix("’s"))
            .unwrap_or(w);
        let opens = first;
        first = raw.ends_with(['.', '!', '?', ':']);
        if w.is_empty() {
            continue;
        }
        let digit = w.chars().any(|c| c.is_ascii_digit());
        let ident = w.contains('_')
            || w.contains("::")
            || w.starts_with("--")
            || (w.contains(['.', '/']) && w.chars().any(char::is_alphabetic))
            || w.chars().skip(1).any(char::is_uppercase) && w.chars().any(char::is_lowercase);
        let name = !opens
            && w.chars().next().is_some_and(char::is_uppercase)
            && w.chars().count() > 1
            && w != "I";
        let acronym = w.chars().count() > 1 && w.chars().all(|c| c.is_ascii_uppercase());
        if digit || ident || name || acronym {
            push(w);
        }
    }
    out
}

/// Lower-cased alphanumeric words of `text`.
pub fn word_set(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// True when `token` (from [`key_tokens`]) occurs in the text of `words`/`lower`.
pub fn token_in(token: &str, words: &HashSet<String>, lower: &str) -> bool {
    let parts: Vec<&str> = token
        .split(|c: char| !c.is_alphanumeric())
        .filter(|p| !p.is_empty())
        .collect();
    if parts.len() > 1 {
        return lower.contains(token) || parts.iter().all(|p| words.contains(*p));
    }
    parts.first().is_some_and(|p| words.contains(*p))
}

/// The units an answer may be built of, across the sources.
#[derive(Debug, Default)]
pub struct Candidates {
    /// (index of the source, unit).
    pub units: Vec<(usize, Unit)>,
    /// What is embedded for each unit: its heading and its text.
    pub texts: Vec<String>,
}

/// Most units considered per turn (bounds the embedding work).
const MAX_UNITS: usize = 96;

/// Cuts every source into units.
pub fn candidates(sources: &[Source]) -> Candidates {
    let mut c = Candidates::default();
    for (i, s) in sources.iter().enumerate() {
        for u in spans::units(&s.text) {
            if c.units.len() == MAX_UNITS {
                return c;
            }
            let shown = spans::display(&s.text, &u);
            let mut text = match &u.heading {
                Some(h) => format!("{h}: {shown}"),
                None => shown,
            };
            if text.len() > 1200 {
                let mut cut = 1200;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
            c.texts.push(text);
            c.units.push((i, u));
        }
    }
    c
}

/// One chosen unit.
#[derive(Debug, Clone)]
pub struct Picked {
    /// Index of its source.
    pub source: usize,
    /// The unit.
    pub unit: Unit,
    /// Its relevance score.
    pub score: f32,
}

/// Names of the answerability features, in order.
pub const FEATURES: [&str; ANSWERABILITY_FEATURES] = [
    "dense",
    "lexical",
    "window_lexical",
    "passage_lexical",
    "missing_key_tokens",
    "type_evidence",
    "passage_similarity",
    "negation_mismatch",
    "unseen_terms",
];

fn negated(text: &str) -> bool {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(str::to_lowercase)
        .any(|w| {
            matches!(
                w.as_str(),
                "not" | "no" | "never" | "cannot" | "neither" | "nor" | "without" | "none"
            ) || w.ends_with("n't")
        })
}

/// The extractive answer before rendering.
#[derive(Debug, Clone, Default)]
pub struct Composition {
    /// Chosen units, best first.
    pub picked: Vec<Picked>,
    /// Calibrated probability that the passages answer the question (0..1).
    pub support: f32,
    /// The features behind `support` (see [`FEATURES`]).
    pub features: Vec<f32>,
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// How the candidate units match the question's terms.
struct Lexicon {
    /// The question's terms.
    qterms: Vec<String>,
    /// Each unit's terms.
    unit_terms: Vec<HashSet<String>>,
    /// IDF of each question term over the candidate units.
    idf: HashMap<String, f32>,
    /// Sum of the IDFs (at least a tiny positive number).
    total: f32,
}

impl Lexicon {
    fn new(question: &str, cands: &Candidates) -> Self {
        let qterms = terms_of_question(question);
        let unit_terms: Vec<HashSet<String>> = cands
            .texts
            .iter()
            .map(|t| analyzer().terms(t).into_iter().collect())
            .collect();
        // IDF over the candidate units: a term every unit has tells nothing apart.
        let n = unit_terms.len() as f32;
        let idf: HashMap<String, f32> = qterms
            .iter()
            .map(|t| {
                let df = unit_terms.iter().filter(|u| u.contains(t)).count() as f32;
                (t.clone(), (1.0 + (n + 1.0) / (df + 0.5)).ln())
            })
            .collect();
        let total: f32 = idf.values().sum::<f32>().max(1e-6);
        Self {
            qterms,
            unit_terms,
            idf,
            total,
        }
    }

    /// IDF-weighted share of the question's terms for which `has` holds.
    fn coverage(&self, has: &dyn Fn(&str) -> bool) -> f32 {
        self.qterms
            .iter()
            .filter(|t| has(t))
            .map(|t| self.idf[t.as_str()])
            .sum::<f32>()
            / self.total
    }
}

/// Chooses the units of the answer. `dense[i]` is unit `i`'s cosine to the question and
/// `vectors[i]` its embedding.
pub fn compose(
    question: &str,
    sources: &[Source],
    cands: &Candidates,
    dense: &[f32],
    vectors: &[Vec<f32>],
    g: &GroundingConfig,
    max_words: usize,
) -> Composition {
    if cands.units.is_empty() {
        return Composition {
            features: vec![0.0; FEATURES.len()],
            ..Composition::default()
        };
    }
    let lex = Lexicon::new(question, cands);
    let expect = expect(question);
    let lexical: Vec<f32> = lex
        .unit_terms
        .iter()
        .map(|u| lex.coverage(&|t| u.contains(t)))
        .collect();
    let passage_sim = |src: usize| sources[src].similarity.unwrap_or(0.0);
    let scores: Vec<f32> = cands
        .units
        .iter()
        .enumerate()
        .map(|(i, (src, _))| {
            g.span_dense * dense[i]
                + g.span_lexical * lexical[i]
                + g.span_passage * passage_sim(*src)
                + g.span_type * type_evidence(expect, &cands.texts[i], question)
        })
        .collect();
    let best = (0..scores.len())
        .max_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(b.cmp(&a)))
        .unwrap_or(0);
    let around = around_best(question, sources, cands, &lex, best);
    // In [`FEATURES`] order.
    let features = vec![
        dense[best],
        lexical[best],
        around.window_lexical,
        around.passage_lexical,
        around.missing_key_tokens,
        type_evidence(expect, &cands.texts[best], question),
        passage_sim(cands.units[best].0),
        around.negation_mismatch,
        around.unseen_terms,
    ];
    let z = g.answerable_bias
        + g.answerable_weights
            .iter()
            .zip(&features)
            .map(|(w, f)| w * f)
            .sum::<f32>();
    // A passage holding none of the question's terms is not about it, whatever the model of
    // the other features says (no answerable dev question has one).
    let about = features[3] > 0.0;
    let support = if about { 1.0 / (1.0 + (-z).exp()) } else { 0.0 };
    let chosen = select(sources, cands, &scores, vectors, best, g, max_words);
    Composition {
        picked: chosen
            .into_iter()
            .map(|i| Picked {
                source: cands.units[i].0,
                unit: cands.units[i].1.clone(),
                score: scores[i],
            })
            .collect(),
        support,
        features,
    }
}

/// The answerability features read around the best unit (see [`FEATURES`]).
struct AroundBest {
    /// Question terms in the best unit and its neighbours (same passage).
    window_lexical: f32,
    /// Question terms in the best unit's passage with its headings.
    passage_lexical: f32,
    /// Key tokens of the question the passage lacks (at most 2).
    missing_key_tokens: f32,
    /// 1 when the question and the window disagree on negation.
    negation_mismatch: f32,
    /// Question terms no source holds (at most 3).
    unseen_terms: f32,
}

/// Reads the best unit, its neighbours, its passage and all the sources for the question.
fn around_best(
    question: &str,
    sources: &[Source],
    cands: &Candidates,
    lex: &Lexicon,
    best: usize,
) -> AroundBest {
    let last = cands.units.len() - 1;
    let (bsrc, _) = &cands.units[best];
    let neighbours =
        || (best.saturating_sub(1)..=(best + 1).min(last)).filter(|&j| cands.units[j].0 == *bsrc);
    let window: HashSet<&String> = neighbours()
        .flat_map(|j| lex.unit_terms[j].iter())
        .collect();
    // A passage is read with its section's headings: they say what its sentences are about.
    let in_context = |src: &Source| format!("{}\n{}", src.heading_path.join("\n"), src.text);
    let passage = in_context(&sources[*bsrc]);
    let passage_terms: HashSet<String> = analyzer().terms(&passage).into_iter().collect();
    let passage_lower = passage.to_lowercase();
    let passage_words = word_set(&passage);
    let missing = key_tokens(question)
        .iter()
        .filter(|t| !token_in(t, &passage_words, &passage_lower))
        .count()
        .min(2) as f32;
    let window_text: String = neighbours()
        .map(|j| cands.texts[j].as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let negation_mismatch = (negated(question) != negated(&window_text)) as u8 as f32;
    let all_terms: HashSet<String> = sources
        .iter()
        .flat_map(|s| analyzer().terms(&in_context(s)))
        .collect();
    let unseen = lex
        .qterms
        .iter()
        .filter(|t| !all_terms.contains(*t))
        .count()
        .min(3) as f32;
    AroundBest {
        window_lexical: lex.coverage(&|t| window.iter().any(|w| w.as_str() == t)),
        passage_lexical: lex.coverage(&|t| passage_terms.contains(t)),
        missing_key_tokens: missing,
        negation_mismatch,
        unseen_terms: unseen,
    }
}

/// The best unit, then supporting units by maximal marginal relevance within the word
/// budget (each at least `support_ratio` of the best's score).
fn select(
    sources: &[Source],
    cands: &Candidates,
    scores: &[f32],
    vectors: &[Vec<f32>],
    best: usize,
    g: &GroundingConfig,
    max_words: usize,
) -> Vec<usize> {
    let words_of = |i: usize| {
        let (src, u) = &cands.units[i];
        spans::word_count(&sources[*src].text[u.start..u.end])
    };
    let mut chosen = vec![best];
    let mut words = words_of(best);
    let floor = scores[best] * g.support_ratio;
    loop {
        let next = (0..scores.len())
            .filter(|i| !chosen.contains(i) && scores[*i] >= floor)
            .filter(|&i| words + words_of(i) <= max_words)
            .map(|i| {
                let redundancy = chosen
                    .iter()
                    .map(|&c| dot(&vectors[i], &vectors[c]))
                    .fold(f32::MIN, f32::max);
                (
                    i,
                    g.mmr_lambda * scores[i] - (1.0 - g.mmr_lambda) * redundancy,
                )
            })
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
        match next {
            Some((i, _)) => {
                words += words_of(i);
                chosen.push(i);
            }
            None => break,
        }
    }
    chosen
}

/// The answer text (each unit verbatim, with its source's marker) and its citations.
pub fn render(sources: &[Source], picked: &[Picked]) -> (String, Vec<Citation>) {
    let mut parts = Vec::new();
    let mut citations = Vec::new();
    for p in picked {
        let src = &sources[p.source];
        let shown = spans::display(&src.text, &p.unit);
        let marker = format!("[{}]", src.n);
        let part = match (p.unit.kind, shown.find("\n\n```").or(shown.find("\n\n~~~"))) {
            (UnitKind::Code, Some(at)) => {
                format!("{} {marker}{}", &shown[..at], &shown[at..])
            }
            (UnitKind::Code, None) => format!("{marker}\n\n{shown}"),
            _ => format!("{shown} {marker}"),
        };
        parts.push(part);
        citations.push(super::cite::citation(src, p.unit.start, p.unit.end, false));
    }
    (parts.join("\n\n"), citations)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(n: usize, text: &str, sim: f32) -> Source {
        crate::agent::cite::test_source(n, text, sim)
    }

    #[test]
    fn question_types_and_key_tokens() {
        assert_eq!(expect("When were the Normans in Normandy?"), Expect::Time);
        assert_eq!(expect("How many people live there?"), Expect::Number);
        assert_eq!(expect("Who was the Norse leader?"), Expect::Name);
        assert_eq!(expect("What is France a region of?"), Expect::Any);
        let k = key_tokens(
            "The default model is called LINQ, which stands for Listing Niner, since 2019.",
        );
        assert_eq!(k, vec!["linq", "listing", "niner", "2019"]);
        let k = key_tokens("Run `groundwork keys create` with --scopes read_only.");
        assert!(k.contains(&"groundwork keys create".to_owned()), "{k:?}");
        assert!(k.contains(&"--scopes".to_owned()) || k.contains(&"scopes".to_owned()));
        assert!(k.contains(&"read_only".to_owned()));
        assert_eq!(key_tokens("Who was Robert's son?"), vec!["robert"]);
    }

    #[test]
    fn the_unit_holding_the_answer_comes_first_with_its_exact_citation() {
        let sources = vec![
            source(
                1,
                "The Normans were a people of France. Their leader was Rollo, who swore fealty \
                 in 911. They spoke Norman French.",
                0.6,
            ),
            source(2, "Normandy is a region in the north of France.", 0.5),
        ];
        let c = candidates(&sources);
        assert_eq!(c.units.len(), 4);
        // Vectors: pretend the embedder likes the second sentence best.
        let dense = vec![0.3, 0.6, 0.2, 0.3];
        let vectors: Vec<Vec<f32>> = (0..4)
            .map(|i| {
                let mut v = vec![0.0; 4];
                v[i] = 1.0;
                v
            })
            .collect();
        let g = GroundingConfig::default();
        let comp = compose(
            "Who was the leader of the Normans?",
            &sources,
            &c,
            &dense,
            &vectors,
            &g,
            20,
        );
        assert_eq!(comp.picked[0].unit.start, 37, "{comp:?}");
        let words: usize = comp
            .picked
            .iter()
            .map(|p| spans::word_count(&sources[p.source].text[p.unit.start..p.unit.end]))
            .sum();
        assert!(words <= 20 || comp.picked.len() == 1);
        let (text, cites) = render(&sources, &comp.picked);
        assert!(text.starts_with("Their leader was Rollo, who swore fealty in 911. [1]"));
        assert_eq!(
            &sources[0].text[cites[0].quote_start..cites[0].quote_end],
            "Their leader was Rollo, who swore fealty in 911."
        );
        assert_eq!(comp.features.len(), FEATURES.len());
        assert!((0.0..=1.0).contains(&comp.support));
    }
}
