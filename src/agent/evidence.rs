//! The retrieved passages cut into quotable units and embedded, once per turn, with the model
//! of each unit's knowledge base (a question compares only with units of the same model).
//! Extractive composition, answerability and claim checks all read from it.

use std::collections::HashMap;

use super::cite::Source;
use super::extract::{candidates, Candidates};
use super::{AgentError, Agents, Result};
use crate::principal::Principal;

/// Units of the passages with their vectors and the question's.
pub(super) struct Evidence {
    /// The units.
    pub cands: Candidates,
    /// One vector per unit.
    pub vectors: Vec<Vec<f32>>,
    /// Each unit's cosine to the question.
    pub dense: Vec<f32>,
    /// Knowledge base of each unit's group.
    kbs: Vec<String>,
    /// Group (index into `kbs`) of each unit.
    group: Vec<usize>,
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Embeds `texts` with `kb`'s model off the async workers.
async fn embed(
    agents: &Agents,
    p: &Principal,
    kb: &str,
    texts: Vec<String>,
) -> Result<Vec<Vec<f32>>> {
    let (knowledge, p, kb) = (agents.inner.knowledge.clone(), p.clone(), kb.to_owned());
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        knowledge.embed(&p, &kb, &refs)
    })
    .await
    .map_err(|_| AgentError::Unavailable("stopping"))?
}

impl Evidence {
    /// Cuts `sources` into units and embeds them with `question`.
    pub async fn gather(
        agents: &Agents,
        p: &Principal,
        sources: &[Source],
        question: &str,
    ) -> Result<Evidence> {
        let cands = candidates(sources);
        let mut kbs: Vec<String> = Vec::new();
        let mut group = Vec::with_capacity(cands.units.len());
        for (src, _) in &cands.units {
            let kb = &sources[*src].kb_id;
            let g = match kbs.iter().position(|k| k == kb) {
                Some(g) => g,
                None => {
                    kbs.push(kb.clone());
                    kbs.len() - 1
                }
            };
            group.push(g);
        }
        let mut vectors = vec![Vec::new(); cands.units.len()];
        let mut dense = vec![0.0; cands.units.len()];
        for (g, kb) in kbs.iter().enumerate() {
            let members: Vec<usize> = (0..group.len()).filter(|&i| group[i] == g).collect();
            let mut texts = vec![question.to_owned()];
            texts.extend(members.iter().map(|&i| cands.texts[i].clone()));
            let mut out = embed(agents, p, kb, texts).await?.into_iter();
            let q = out.next().unwrap_or_default();
            for (&i, v) in members.iter().zip(out) {
                dense[i] = dot(&q, &v);
                vectors[i] = v;
            }
        }
        Ok(Evidence {
            cands,
            vectors,
            dense,
            kbs,
            group,
        })
    }

    /// Cosine of each of `texts` to each unit: `out[j][i]` for text `j`, unit `i`.
    pub async fn similarities(
        &self,
        agents: &Agents,
        p: &Principal,
        texts: &[String],
    ) -> Result<Vec<Vec<f32>>> {
        let mut by_group: HashMap<usize, Vec<Vec<f32>>> = HashMap::new();
        if !texts.is_empty() {
            for (g, kb) in self.kbs.iter().enumerate() {
                by_group.insert(g, embed(agents, p, kb, texts.to_vec()).await?);
            }
        }
        Ok((0..texts.len())
            .map(|j| {
                (0..self.vectors.len())
                    .map(|i| {
                        by_group
                            .get(&self.group[i])
                            .and_then(|vs| vs.get(j))
                            .map_or(0.0, |v| dot(v, &self.vectors[i]))
                    })
                    .collect()
            })
            .collect())
    }
}
