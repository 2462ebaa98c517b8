//! Stage 1 of a turn: a follow-up question becomes a standalone one. The fast route rewrites
//! it from the last exchange; the last question joined with this one is searched as well, so
//! a weak or failed rewrite cannot lose the context. A first question is taken as it is.

use serde_json::json;

use super::context::{Ctx, Query};
use super::generate::{msg, quick_call};
use super::summary::clip;
use crate::gateway::types::{Role, Stop, Usage};
use crate::store::agents::{MessageRecord, MessageRole};

/// The queries of this turn: the rewrite (when usable) first, then the joined question.
pub(super) async fn run(ctx: &mut Ctx<'_>, history: &[MessageRecord], message: &str) -> Query {
    let started = std::time::Instant::now();
    let Some(last) = history.iter().rev().find(|m| m.role == MessageRole::User) else {
        return Query {
            text: message.to_owned(),
            queries: vec![message.to_owned()],
            rewrite_ms: 0.0,
        };
    };
    let joined = format!("{} {message}", last.content);
    ctx.sink.emit("status", json!({"stage": "rewriting"}));
    let rewritten = match rewrite(ctx, history, message).await {
        Ok((q, u, c)) => {
            ctx.spend(u, c);
            q
        }
        Err(e) => {
            tracing::warn!(agent = %ctx.key.1, error = %e, "follow-up not rewritten; using the history");
            None
        }
    };
    let queries = match rewritten {
        Some(q) => vec![q, joined],
        None => vec![joined],
    };
    Query {
        text: queries[0].clone(),
        queries,
        rewrite_ms: started.elapsed().as_secs_f64() * 1e3,
    }
}

/// The fast route's standalone version of a follow-up question, if it gave a usable one.
async fn rewrite(
    ctx: &Ctx<'_>,
    history: &[MessageRecord],
    message: &str,
) -> super::Result<(Option<String>, Usage, f64)> {
    let conversation = &ctx.conversation;
    let mut transcript = String::new();
    if !conversation.summary.is_empty() {
        transcript.push_str(&format!("Summary: {}\n", clip(&conversation.summary, 600)));
    }
    // The last exchange is what a follow-up refers to; a short prompt keeps a local model fast.
    for m in history.iter().rev().take(2).rev() {
        let who = if m.role == MessageRole::User {
            "User"
        } else {
            "Assistant"
        };
        transcript.push_str(&format!("{who}: {}\n", clip(&m.content, 240)));
    }
    let messages = vec![
        msg(
            Role::System,
            "Rewrite the user's last question so that it can be understood without the conversation. \
             Keep every name and detail it refers to. Reply with the rewritten question only."
                .into(),
        ),
        msg(
            Role::User,
            format!("Conversation:\n{transcript}\nLast question: {message}\n\nStandalone question:"),
        ),
    ];
    // One line is a question; stopping there saves decoding a model's rambling.
    let stop = Some(Stop::One("\n".into()));
    let (text, usage, cost) = quick_call(
        ctx.agents,
        &ctx.call,
        &ctx.config.fast_route,
        messages,
        48,
        stop,
    )
    .await?;
    // A model that answered instead of rewriting (small ones do) gives no question: `None`.
    Ok((clean_rewrite(&text), usage, cost))
}

/// The first line of a rewrite without labels or quotes; `None` when unusable.
fn clean_rewrite(text: &str) -> Option<String> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let mut q = line;
    for prefix in ["Standalone question:", "Rewritten question:", "Question:"] {
        if let Some(rest) = q.strip_prefix(prefix) {
            q = rest.trim();
        }
    }
    let q = q.trim_matches(|c| c == '"' || c == '\'' || c == '`').trim();
    (q.len() >= 3 && q.len() <= 400 && q.ends_with('?')).then(|| q.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_are_cleaned() {
        assert_eq!(
            clean_rewrite("\n Standalone question: \"When does the backup run?\"\nextra")
                .as_deref(),
            Some("When does the backup run?")
        );
        assert_eq!(clean_rewrite("  "), None);
        assert_eq!(clean_rewrite("ok"), None);
        assert_eq!(clean_rewrite("You can upload a file."), None);
    }
}
