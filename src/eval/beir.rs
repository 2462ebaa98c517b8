//! Reading a BEIR folder: `corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

use serde::Deserialize;

use super::{EvalError, Result};

/// One corpus document.
#[derive(Debug, Deserialize)]
pub struct Document {
    /// Its id in the qrels.
    #[serde(rename = "_id")]
    pub id: String,
    /// Title (may be empty).
    #[serde(default)]
    pub title: String,
    /// Body.
    #[serde(default)]
    pub text: String,
}

impl Document {
    /// Title and body as one passage (BEIR's convention: joined by a space).
    pub fn passage(&self) -> String {
        if self.title.is_empty() {
            self.text.clone()
        } else {
            format!("{} {}", self.title, self.text)
        }
    }
}

/// One query.
#[derive(Debug, Deserialize)]
pub struct Query {
    /// Its id in the qrels.
    #[serde(rename = "_id")]
    pub id: String,
    /// The question.
    pub text: String,
}

/// Relevance judgements: query id → (document id → grade).
pub type Qrels = HashMap<String, HashMap<String, u32>>;

/// A loaded data set.
pub struct Dataset {
    /// Folder name.
    pub name: String,
    /// Every document.
    pub corpus: Vec<Document>,
    /// The queries that have judgements in the split.
    pub queries: Vec<Query>,
    /// The split's judgements.
    pub qrels: Qrels,
}

impl Dataset {
    /// Loads `dir` with the judgements of `split`.
    pub fn load(dir: &Path, split: &str) -> Result<Self> {
        let corpus = read_jsonl(&dir.join("corpus.jsonl"))?;
        let queries = read_jsonl(&dir.join("queries.jsonl"))?;
        let qrels = read_qrels(&dir.join("qrels").join(format!("{split}.tsv")))?;
        Ok(Self {
            name: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "dataset".into()),
            corpus,
            queries,
            qrels,
        })
    }

    /// Queries that have at least one positive judgement in the split.
    pub fn judged_queries(&self) -> impl Iterator<Item = &Query> {
        self.queries.iter().filter(|q| {
            self.qrels
                .get(&q.id)
                .is_some_and(|r| r.values().any(|&g| g > 0))
        })
    }
}

fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    let file = fs_err::File::open(path).map_err(|e| EvalError::Dataset(e.to_string()))?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| EvalError::Dataset(format!("{}: {e}", path.display())))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line).map_err(|e| {
                EvalError::Dataset(format!("{} line {}: {e}", path.display(), n + 1))
            })?,
        );
    }
    Ok(out)
}

fn read_qrels(path: &Path) -> Result<Qrels> {
    let text = fs_err::read_to_string(path).map_err(|e| EvalError::Dataset(e.to_string()))?;
    let mut qrels = Qrels::new();
    for (n, line) in text.lines().enumerate() {
        let cols: Vec<&str> = line.split('\t').collect();
        if n == 0 && cols.first() == Some(&"query-id") || line.trim().is_empty() {
            continue;
        }
        let [q, d, grade] = cols[..] else {
            return Err(EvalError::Dataset(format!(
                "{} line {}: expected 3 columns",
                path.display(),
                n + 1
            )));
        };
        let grade: u32 = grade.trim().parse().map_err(|_| {
            EvalError::Dataset(format!(
                "{} line {}: bad grade {grade:?}",
                path.display(),
                n + 1
            ))
        })?;
        qrels
            .entry(q.to_owned())
            .or_default()
            .insert(d.to_owned(), grade);
    }
    Ok(qrels)
}
