//! Settings of the agent runtime (`[agents]` in `groundwork.toml`) and of one agent (its
//! `config` document, changed through the API).

use serde::{Deserialize, Serialize};

use super::{AgentError, Result};
use crate::gateway::budget::Window;
use crate::index::SearchMode;

/// `[agents]`: the runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentsConfig {
    /// An agent with no message, subscriber, turn or due task for this long leaves memory.
    pub idle_secs: u64,
    /// Commands waiting in one agent's mailbox before senders wait.
    pub mailbox: usize,
    /// Attempts of a queued task before it fails for good.
    pub task_max_attempts: u32,
    /// First retry delay of a failed task (doubles per attempt, jittered, at most 5 minutes).
    pub task_backoff_ms: u64,
    /// How long the events of a streamed answer stay available for resuming.
    pub event_retention_secs: u64,
    /// Largest chat message, bytes.
    pub max_message_bytes: usize,
    /// Largest state document, bytes.
    pub max_state_bytes: usize,
    /// Weights and thresholds of extractive answers and claim checks (calibrated on data).
    pub grounding: GroundingConfig,
    /// Configuration of a new agent.
    pub defaults: AgentConfig,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        Self {
            idle_secs: 300,
            mailbox: 256,
            task_max_attempts: 5,
            task_backoff_ms: 1_000,
            event_retention_secs: 3_600,
            max_message_bytes: 16 * 1024,
            max_state_bytes: 1 << 20,
            grounding: GroundingConfig::default(),
            defaults: AgentConfig::default(),
        }
    }
}

/// Number of answerability features (named in `extract::FEATURES`).
pub const ANSWERABILITY_FEATURES: usize = 9;

/// `[agents.grounding]`: how extractive answers choose their units, how answerable a
/// question is judged, and how similar a generated sentence must be to its support. The
/// defaults were fitted on the tuning half of the squad-dev questions (`groundwork
/// eval-answers`); the README gives the figures on the other half.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroundingConfig {
    /// Weight of a unit's embedding similarity to the question.
    pub span_dense: f32,
    /// Weight of the IDF-weighted share of the question's terms in the unit.
    pub span_lexical: f32,
    /// Weight of the retrieval similarity of the unit's passage.
    pub span_passage: f32,
    /// Weight of the unit holding what the question asks for (date, number, name).
    pub span_type: f32,
    /// Relevance against novelty when adding supporting units (1: relevance only).
    pub mmr_lambda: f32,
    /// A supporting unit scores at least this share of the best unit.
    pub support_ratio: f32,
    /// Answerability: bias of the logistic score.
    pub answerable_bias: f32,
    /// Answerability: weights of the features (dense, lexical, window_lexical,
    /// passage_lexical, missing_key_tokens, type_evidence, passage_similarity,
    /// negation_mismatch, unseen_terms).
    pub answerable_weights: Vec<f32>,
    /// Least embedding similarity between a generated sentence and its supporting unit.
    pub claim_similarity: f32,
}

impl Default for GroundingConfig {
    fn default() -> Self {
        Self {
            span_dense: 1.0,
            span_lexical: 1.0,
            span_passage: 0.5,
            span_type: 0.15,
            mmr_lambda: 0.7,
            support_ratio: 0.5,
            answerable_bias: 0.319,
            answerable_weights: vec![
                1.0523, -0.0687, 0.2641, -0.7324, -1.7919, -0.1208, -0.2923, 0.0277, -0.077,
            ],
            claim_similarity: 0.45,
        }
    }
}

impl GroundingConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        let n = ANSWERABILITY_FEATURES;
        if self.answerable_weights.len() != n {
            return Err(AgentError::Invalid(format!(
                "grounding.answerable_weights needs {n} numbers"
            )));
        }
        if !(0.0..=1.0).contains(&self.mmr_lambda) || !(0.0..=1.0).contains(&self.support_ratio) {
            return Err(AgentError::Invalid(
                "grounding.mmr_lambda and support_ratio must be within 0..=1".into(),
            ));
        }
        if !(-1.0..=1.0).contains(&self.claim_similarity) {
            return Err(AgentError::Invalid(
                "grounding.claim_similarity is a cosine within -1..=1".into(),
            ));
        }
        Ok(())
    }
}

/// How an agent answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnswerMode {
    /// Verbatim units of the passages, no model call.
    Extractive,
    /// Written by the main route's model, every sentence checked against the passages.
    Generative,
    /// Extractive when the main route's first target is a local model, else generative.
    #[default]
    Auto,
}

/// A spending limit of one agent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentBudget {
    /// USD per window.
    #[schema(minimum = 0.0)]
    pub limit_usd: f64,
    /// `day`, `month` or `total` (UTC).
    #[schema(value_type = String, pattern = "^(day|month|total)$")]
    pub window: Window,
}

/// One agent's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Display name.
    pub name: Option<String>,
    /// Knowledge bases (ids or names) it searches; empty: every knowledge base of its tenant.
    pub knowledge_bases: Vec<String>,
    /// Instructions put before the sources.
    #[schema(max_length = 16384)]
    pub system_prompt: String,
    /// Gateway route for quick calls (rewriting follow-ups, summaries).
    #[schema(pattern = r"\S")]
    pub fast_route: String,
    /// Gateway route for answers.
    #[schema(pattern = r"\S")]
    pub main_route: String,
    /// Passages put in the prompt.
    #[schema(minimum = 1, maximum = 20)]
    pub top_k: usize,
    /// Retrieval mode.
    #[schema(value_type = String, pattern = "^(dense|bm25|hybrid)$")]
    pub mode: SearchMode,
    /// Least cosine similarity of a passage to the question; below it the passage is ignored,
    /// and with none left the agent says it found nothing.
    #[schema(minimum = -1.0, maximum = 1.0)]
    pub min_score: f64,
    /// Gateway route (or `provider/model`) of a reranker that orders the passages found over
    /// all knowledge bases and queries before the best `top_k` are kept; none: ordered by
    /// similarity. A reranker that fails leaves the similarity order.
    #[schema(pattern = r"\S", nullable = true)]
    pub rerank: Option<String>,
    /// Candidates handed to the reranker.
    #[schema(minimum = 1, maximum = 200)]
    pub rerank_candidates: usize,
    /// Token budget of the sources in the prompt (passages are trimmed to their best sentences).
    #[schema(minimum = 32, maximum = 100000)]
    pub context_tokens: usize,
    /// Token budget of the conversation history in the prompt; older turns are summarised.
    #[schema(maximum = 100000)]
    pub history_tokens: usize,
    /// Longest answer, tokens.
    #[schema(minimum = 1, maximum = 8192)]
    pub max_answer_tokens: u32,
    /// Sampling temperature of answers (0: greedy, cacheable).
    #[schema(minimum = 0.0, maximum = 2.0)]
    pub temperature: f64,
    /// Spending limit.
    pub budget: Option<AgentBudget>,
    /// `extractive`, `generative` or `auto`.
    pub answer_mode: AnswerMode,
    /// Remove generated sentences that no passage supports (else they are marked).
    pub strict: bool,
    /// Word budget of an extractive answer (its best unit is kept whole even if longer).
    #[schema(minimum = 5, maximum = 2000)]
    pub answer_words: usize,
    /// Least calibrated answerability (0..1) of the best passage unit; below it the agent
    /// answers that it could not find the answer.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub min_support: f64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            name: None,
            knowledge_bases: Vec::new(),
            system_prompt:
                "You are Groundwork, a careful assistant that answers from the team's documents."
                    .to_owned(),
            fast_route: "fast".to_owned(),
            main_route: "main".to_owned(),
            top_k: 5,
            mode: SearchMode::Hybrid,
            min_score: 0.15,
            rerank: None,
            rerank_candidates: 30,
            context_tokens: 360,
            history_tokens: 400,
            max_answer_tokens: 160,
            temperature: 0.0,
            budget: None,
            answer_mode: AnswerMode::Auto,
            strict: false,
            answer_words: 60,
            min_support: 0.35,
        }
    }
}

impl AgentConfig {
    /// This config with a JSON Merge Patch (RFC 7396) applied. A member the config does not
    /// have is refused even when its value is `null` (which would otherwise remove nothing).
    pub fn merged(&self, patch: &serde_json::Value) -> Result<AgentConfig> {
        let mut v =
            serde_json::to_value(self).map_err(|e| AgentError::Invalid(format!("config: {e}")))?;
        if let Some(path) = unknown_member(patch, &v, "") {
            return Err(AgentError::Invalid(format!(
                "config has no member `{path}`"
            )));
        }
        json_patch::merge(&mut v, patch);
        serde_json::from_value(v).map_err(|e| AgentError::Invalid(format!("config: {e}")))
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(AgentError::Invalid(m));
        if self.top_k == 0 || self.top_k > 20 {
            return bad("top_k must be within 1..=20".into());
        }
        if !(-1.0..=1.0).contains(&self.min_score) {
            return bad("min_score is a cosine similarity within -1..=1".into());
        }
        if self.rerank_candidates == 0 || self.rerank_candidates > 200 {
            return bad("rerank_candidates must be within 1..=200".into());
        }
        if self.rerank.as_ref().is_some_and(|r| r.trim().is_empty()) {
            return bad("rerank must name a gateway route (or be null)".into());
        }
        if !(0.0..=2.0).contains(&self.temperature) {
            return bad("temperature must be within 0..=2".into());
        }
        if self.max_answer_tokens == 0 || self.max_answer_tokens > 8192 {
            return bad("max_answer_tokens must be within 1..=8192".into());
        }
        if !(32..=100_000).contains(&self.context_tokens) || self.history_tokens > 100_000 {
            return bad(
                "context_tokens must be within 32..=100000 and history_tokens at most 100000"
                    .into(),
            );
        }
        if self.fast_route.trim().is_empty() || self.main_route.trim().is_empty() {
            return bad("fast_route and main_route must name gateway routes".into());
        }
        if self.system_prompt.len() > 16 * 1024 {
            return bad("system_prompt is longer than 16 KiB".into());
        }
        if self.answer_words < 5 || self.answer_words > 2000 {
            return bad("answer_words must be within 5..=2000".into());
        }
        if !(0.0..=1.0).contains(&self.min_support) {
            return bad("min_support is a probability within 0..=1".into());
        }
        if let Some(b) = self.budget {
            if !b.limit_usd.is_finite() || b.limit_usd < 0.0 {
                return bad("budget.limit_usd must be a non-negative number".into());
            }
        }
        Ok(())
    }

    /// The stored document read back; unknown or invalid fields fall back to `defaults`.
    pub fn from_stored(v: &serde_json::Value, defaults: &AgentConfig) -> AgentConfig {
        serde_json::from_value(v.clone()).unwrap_or_else(|_| defaults.clone())
    }
}

/// The first member of `patch` that `current` (an object) has no place for, as a path.
/// Where `current` is not an object (an absent budget) the types decide when it is read.
fn unknown_member(
    patch: &serde_json::Value,
    current: &serde_json::Value,
    at: &str,
) -> Option<String> {
    let (patch, current) = (patch.as_object()?, current.as_object()?);
    patch.iter().find_map(|(k, v)| {
        let path = format!("{at}/{k}");
        match current.get(k) {
            None => Some(path),
            Some(c) => unknown_member(v, c, &path),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A merge patch naming a member the config lacks is refused, even as `null` (which
    /// would otherwise remove nothing and pass unnoticed), at any depth.
    #[test]
    fn merge_patches_refuse_members_the_config_lacks() {
        let mut config = AgentConfig::default();
        let err = config
            .merged(&serde_json::json!({"": null, "answer_words": 5}))
            .expect_err("unknown member");
        assert!(err.to_string().contains("`/`"), "{err}");
        config.budget = Some(AgentBudget {
            limit_usd: 1.0,
            window: Window::Day,
        });
        let err = config
            .merged(&serde_json::json!({"budget": {"cap": null}}))
            .expect_err("unknown nested member");
        assert!(err.to_string().contains("/budget/cap"), "{err}");
        let merged = config
            .merged(&serde_json::json!({"top_k": 7, "budget": null}))
            .expect("known members");
        assert_eq!((merged.top_k, merged.budget), (7, None));
        // Bounds hold on the value sent: just above 1 is refused (as f32 it read as 1.0).
        let err = config
            .merged(&serde_json::json!({"min_support": 1.0000000000000002}))
            .and_then(|c| c.validate().map(|_| c))
            .expect_err("above 1");
        assert!(err.to_string().contains("min_support"), "{err}");
    }

    /// Every TOML block of the agents guide parses and validates.
    #[test]
    fn the_guides_examples_are_valid_configuration() {
        let configs = crate::config::assert_guide_blocks_are_valid("data/guide/agents.md");
        assert!(configs.iter().any(|c| c.agents.idle_secs == 300));
    }

    #[test]
    fn defaults_are_valid_and_unknown_fields_are_refused() {
        AgentConfig::default().validate().expect("valid");
        let e = serde_json::from_value::<AgentConfig>(serde_json::json!({"topk": 3}));
        assert!(e.is_err());
        let c: AgentConfig =
            serde_json::from_value(serde_json::json!({"top_k": 5, "mode": "bm25"})).expect("ok");
        assert_eq!((c.top_k, c.mode), (5, SearchMode::Bm25));
        assert!(AgentConfig { top_k: 0, ..c }.validate().is_err());
    }
}
