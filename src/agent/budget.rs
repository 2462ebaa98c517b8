//! An agent's own spending limit, checked before a turn and handed to its model calls.

use chrono::Utc;

use super::{blocking, AgentConfig, AgentError, Agents, Key, Result};

/// Refuses a turn once the agent's spend in the budget's window reached the limit. Checked
/// under the turn lock (turns of an agent run one at a time, each sees the cost of the one
/// before); `chat` also checks before it opens a stream, so that a spent agent answers HTTP
/// 429 rather than an error event.
/// Answers what is left of the budget (USD), `None` without one; each model call of the turn
/// is capped by it (its worst case must fit), so the limit is never exceeded.
pub(super) async fn check_budget(
    agents: &Agents,
    key: &Key,
    config: &AgentConfig,
) -> Result<Option<f64>> {
    let Some(b) = config.budget else {
        return Ok(None);
    };
    let (start, resets_at) = b.window.bounds(Utc::now());
    let store = agents.inner.store.clone();
    let (t, a) = key.clone();
    let spent = blocking(move || store.agent_spend(&t, &a, start)).await?;
    if spent >= b.limit_usd {
        return Err(AgentError::BudgetExceeded {
            limit_usd: b.limit_usd,
            spent_usd: spent,
            resets_at,
        });
    }
    Ok(Some(b.limit_usd - spent))
}
