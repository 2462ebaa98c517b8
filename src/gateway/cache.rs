//! The response cache key: a hash of the canonical request (route, messages after prompt
//! guardrails, sampling parameters), and how cached answers are replayed as streams.

use serde::Serialize;

use super::types::Message;
use crate::util::sha256_hex;

#[derive(Serialize)]
struct Canonical<'a> {
    route: &'a str,
    messages: &'a [Message],
    temperature: Option<f32>,
    top_p: Option<f32>,
    max_tokens: u32,
    stop: &'a [String],
    seed: Option<u64>,
}

/// The cache key of a request.
#[allow(clippy::too_many_arguments)]
pub fn key(
    route: &str,
    messages: &[Message],
    temperature: Option<f32>,
    top_p: Option<f32>,
    max_tokens: u32,
    stop: &[String],
    seed: Option<u64>,
) -> String {
    let c = Canonical {
        route,
        messages,
        temperature,
        top_p,
        max_tokens,
        stop,
        seed,
    };
    sha256_hex(serde_json::to_string(&c).unwrap_or_default().as_bytes())
}

/// The cache key of a rerank: the route, the query and the passages in order.
pub fn rerank_key(route: &str, query: &str, documents: &[String]) -> String {
    let c = serde_json::json!({"kind": "rerank", "route": route, "query": query, "documents": documents});
    sha256_hex(c.to_string().as_bytes())
}

/// Splits a cached answer into stream deltas of about `size` bytes at word ends.
pub fn replay_pieces(text: &str, size: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for word in text.split_inclusive(' ') {
        cur.push_str(word);
        if cur.len() >= size {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::types::Role;

    #[test]
    fn keys_change_with_every_parameter_and_replay_keeps_text() {
        let m = vec![Message {
            role: Role::User,
            content: "hi".into(),
            name: None,
        }];
        let a = key("fast", &m, Some(0.0), None, 10, &[], None);
        assert_eq!(a, key("fast", &m, Some(0.0), None, 10, &[], None));
        assert_ne!(a, key("fast", &m, Some(0.0), None, 11, &[], None));
        assert_ne!(a, key("other", &m, Some(0.0), None, 10, &[], None));
        assert_ne!(a, key("fast", &m, Some(0.0), None, 10, &["x".into()], None));
        let docs = ["a".to_owned(), "b".to_owned()];
        let r = rerank_key("rr", "q", &docs);
        assert_ne!(r, rerank_key("rr", "q", &["b".to_owned(), "a".to_owned()]));
        assert_ne!(r, rerank_key("rr", "q2", &docs));
        let text = "The Eiffel Tower was completed in 1889, in Paris.";
        assert_eq!(replay_pieces(text, 8).concat(), text);
    }
}
