//! The local chat model's native forward pass through its model thread: the KV cache reused
//! across prompts that share a beginning changes no answer. (Its logits against the exact f32
//! pass and candle's are unit tests in `gateway::local`.)

use std::time::Instant;

use groundwork::gateway::local::{Generate, LocalChat, LocalEngine};
use groundwork::gateway::types::{Delta, Message, Role};
use groundwork::supervisor::Supervisor;

use crate::common::root;

fn start(engine: LocalEngine, supervisor: &Supervisor) -> LocalChat {
    LocalChat::start(
        &root().join("models/SmolLM2-135M-Instruct"),
        4,
        4096,
        1.15,
        engine,
        supervisor,
    )
}

fn msg(role: Role, content: &str) -> Message {
    Message {
        role,
        content: content.into(),
        name: None,
    }
}

/// Five prompts shaped as agents send them: a system rule, numbered sources, a question.
fn prompts() -> Vec<Vec<Message>> {
    let system = "Answer the question using only the numbered sources. Cite them as [1], [2]. \
                  If the sources do not contain the answer, say that it was not found.";
    let cases = [
        (
            "[1] The Eiffel Tower in Paris was completed in March 1889 as the entrance arch to \
             the 1889 World's Fair.\n[2] It was the tallest structure in the world until 1930.",
            "When was the Eiffel Tower completed?",
        ),
        (
            "[1] Rust's ownership rules: each value has an owner; there can only be one owner at \
             a time; when the owner goes out of scope, the value is dropped.",
            "What happens when the owner of a value goes out of scope?",
        ),
        (
            "[1] Photosynthesis converts light energy into chemical energy stored in glucose. \
             [2] It takes place in the chloroplasts of plant cells.",
            "Where does photosynthesis take place?",
        ),
        (
            "[1] The Treaty of Westphalia (1648) ended the Thirty Years' War in the Holy Roman \
             Empire.",
            "Which war did the Treaty of Westphalia end, and when?",
        ),
        (
            "[1] Groundwork stores every document in SQLite and indexes chunks with HNSW and BM25.",
            "What is the capital of Australia?",
        ),
    ];
    cases
        .iter()
        .map(|(sources, q)| {
            vec![
                msg(Role::System, system),
                msg(Role::User, &format!("Sources:\n{sources}\n\nQuestion: {q}")),
            ]
        })
        .collect()
}

fn answer(chat: &LocalChat, messages: &[Message]) -> String {
    let mut rx = chat
        .generate(Generate {
            messages: messages.to_vec(),
            temperature: Some(0.0),
            top_p: None,
            max_tokens: 40,
            stop: Vec::new(),
            seed: Some(1),
        })
        .expect("queued");
    let mut text = String::new();
    while let Some(ev) = rx.blocking_recv() {
        if let Delta::Text(t) = ev.expect("generation") {
            text.push_str(&t);
        }
    }
    text
}

/// Through the model thread as the gateway drives it: the same prompt twice, and a follow-up
/// turn (whose prompt begins with the first turn and its answer) after other prompts, answer
/// exactly as a freshly started model does — the cache kept between generations changes
/// nothing, including the positions generated while answering, which are dropped.
#[test]
fn answers_do_not_depend_on_what_was_asked_before() {
    let supervisor = Supervisor::new();
    let warm = start(LocalEngine::Native, &supervisor);
    let prompts = prompts();
    let started = Instant::now();
    let first: Vec<String> = prompts.iter().map(|p| answer(&warm, p)).collect();
    eprintln!("5 answers in {:.2} s", started.elapsed().as_secs_f64());
    assert!(first.iter().all(|a| !a.trim().is_empty()));
    assert_eq!(answer(&warm, &prompts[4]), first[4]);
    let mut follow = prompts[0].clone();
    follow.push(msg(Role::Assistant, &first[0]));
    follow.push(msg(
        Role::User,
        "And until when was it the tallest structure?",
    ));
    answer(&warm, &prompts[1]);
    let after_other = answer(&warm, &follow);
    let cold = start(LocalEngine::Native, &supervisor);
    assert_eq!(after_other, answer(&cold, &follow));
    // Right after the turn it continues, too.
    answer(&warm, &prompts[0]);
    assert_eq!(answer(&warm, &follow), after_other);
    warm.shutdown();
    cold.shutdown();
}
