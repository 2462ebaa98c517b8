//! `groundwork eval-answers`: builds a knowledge base from a SQuAD-style corpus (in a
//! temporary data directory unless one is given), asks every question through the agent's
//! real chat turn — the code path of `POST /v1/agents/{id}/chat` — and reports answer quality
//! (see `groundwork::eval::answers`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use groundwork::agent::answer::{ChatAnswer, ChatInput, ChatStart};
use groundwork::agent::{AgentConfig, AnswerMode, Write};
use groundwork::config::Config;
use groundwork::eval::answers::{self, Answer, AnswerSet, Outcome, Question, Report, Split};
use groundwork::service::{CreateKb, ServiceError, Upload};
use indicatif::{ProgressBar, ProgressStyle};

/// Arguments of `groundwork eval-answers`.
#[derive(clap::Args, Debug)]
pub struct AnswerArgs {
    /// Folder with `corpus.jsonl` and `questions.jsonl`.
    #[arg(long)]
    pub dataset: PathBuf,
    /// Which questions: `all`, `tune` (articles 1, 3, … in file order) or `held-out`.
    #[arg(long, default_value = "all")]
    pub split: String,
    /// Ask at most this many questions (a seeded sample).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Seed of the sample.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// `extractive`, `generative` or `auto` (the agent's default).
    #[arg(long)]
    pub mode: Option<String>,
    /// The agent's `min_support` (answerability threshold) for this run.
    #[arg(long)]
    pub min_support: Option<f64>,
    /// Keep the knowledge base in this data directory (reused when run again).
    #[arg(long)]
    pub keep_data: Option<PathBuf>,
    /// Write one JSON line per question (outcome and answerability features) here.
    #[arg(long)]
    pub dump: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `groundwork eval-answers`.
pub fn run(mut config: Config, args: AnswerArgs) -> anyhow::Result<()> {
    let split: Split = serde_json::from_value(serde_json::Value::String(args.split.clone()))
        .context("--split is all, tune or held-out")?;
    let mode: Option<AnswerMode> = args
        .mode
        .as_ref()
        .map(|m| serde_json::from_value(serde_json::Value::String(m.clone())))
        .transpose()
        .context("--mode is extractive, generative or auto")?;
    let set = AnswerSet::load(&args.dataset)?;
    let questions = set.select(split, args.limit, args.seed);
    let temp = match &args.keep_data {
        Some(dir) => {
            config.data_dir = dir.clone();
            None
        }
        None => {
            let dir = std::env::temp_dir().join(format!("gw-eval-{}", uuid::Uuid::now_v7()));
            config.data_dir = dir.clone();
            Some(dir)
        }
    };
    let service = super::local::open(config)?;
    let out = (|| -> anyhow::Result<()> {
        let p = service.local_principal(groundwork::service::auth::DEMO_TENANT)?;
        let paragraph_of = build_kb(&service, &p, &set)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let outcomes = rt.block_on(async {
            let agents = groundwork::app::agents(&service);
            agents.start().await?;
            // The configured defaults every run (a kept data directory holds the last run's).
            let mut agent = service.config().agents.defaults.clone();
            agent.knowledge_bases = vec!["eval".into()];
            if let Some(m) = args.min_support {
                agent.min_support = m;
            }
            agents
                .write(&p, "eval", Write::SetConfig(Box::new(agent)), None)
                .await?;
            let bar = ProgressBar::new(questions.len() as u64);
            bar.set_style(ProgressStyle::with_template(
                "{bar:40} {pos}/{len} questions, {per_sec}, ETA {eta} {msg}",
            )?);
            let mut outcomes = Vec::with_capacity(questions.len());
            for q in &questions {
                let input = ChatInput {
                    message: q.question.clone(),
                    conversation_id: None,
                    stream: false,
                    answer_mode: mode,
                };
                let ChatStart::Complete(a) = agents.chat(&p, "eval", input).await? else {
                    anyhow::bail!("a whole answer was asked for");
                };
                outcomes.push(outcome_of(q, &a, &paragraph_of));
                bar.inc(1);
            }
            bar.finish_and_clear();
            agents.shutdown();
            anyhow::Ok(outcomes)
        })?;
        if let Some(path) = &args.dump {
            dump(path, &outcomes)?;
        }
        let report = Report::of(&outcomes);
        print(&report, &args, split, mode)?;
        Ok(())
    })();
    service.shutdown();
    if let Some(dir) = temp {
        let _ = std::fs::remove_dir_all(dir);
    }
    out
}

/// One question's outcome: abstained or not, gold answer contained and cited, timings,
/// answerability features, the paragraphs retrieved and cited.
fn outcome_of(q: &Question, a: &ChatAnswer, paragraph_of: &HashMap<String, String>) -> Outcome {
    let cited: Vec<String> = a
        .citations
        .iter()
        .filter_map(|c| paragraph_of.get(&c.document_id).cloned())
        .collect();
    let retrieved: Vec<String> = a
        .sources
        .iter()
        .filter_map(|s| paragraph_of.get(&s.document_id).cloned())
        .collect();
    let (abstained, contains, cited_gold, words) = answers::score(
        q,
        &Answer {
            text: &a.message.content,
            found: a.found,
            cited: cited.clone(),
        },
    );
    Outcome {
        id: q.id.clone(),
        answerable: q.answerable,
        abstained,
        contains_gold: contains,
        cited_gold,
        words,
        total_ms: a.timings.total_ms,
        retrieval_ms: a.timings.retrieval_ms,
        grounding_ms: a.timings.grounding_ms,
        grounded_share: a.grounded_share,
        support: a.support,
        features: a.features.clone(),
        retrieved,
        cited,
    }
}

/// Writes one JSON line per outcome.
fn dump(path: &std::path::Path, outcomes: &[Outcome]) -> anyhow::Result<()> {
    let mut text = String::new();
    for o in outcomes {
        text.push_str(&serde_json::to_string(o)?);
        text.push('\n');
    }
    fs_err::write(path, text)?;
    Ok(())
}

/// Creates KB `eval` with one document per paragraph (unless it exists) and waits until it is
/// indexed; returns document id → paragraph `_id`.
fn build_kb(
    service: &groundwork::service::Service,
    p: &groundwork::service::Principal,
    set: &AnswerSet,
) -> anyhow::Result<HashMap<String, String>> {
    match service.create_kb(
        p,
        CreateKb {
            name: "eval".into(),
            ..CreateKb::default()
        },
    ) {
        Ok(_) | Err(ServiceError::Conflict { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let started = Instant::now();
    let mut map = HashMap::new();
    let mut jobs = Vec::new();
    let per_request = service.config().ingest.max_files_per_request.clamp(1, 16);
    for group in set.corpus.chunks(per_request) {
        let uploads: Vec<Upload> = group
            .iter()
            .map(|para| Upload {
                name: format!("{}.txt", para.id.replace('/', "-")),
                bytes: para.text.clone().into_bytes().into(),
                metadata: Default::default(),
                declared: None,
                password: None,
            })
            .collect();
        let r = loop {
            match service.upload(p, "eval", uploads.clone(), None) {
                Ok(r) => break r,
                Err(ServiceError::QueueFull { .. }) => std::thread::sleep(Duration::from_secs(1)),
                Err(e) => return Err(e.into()),
            }
        };
        for (doc, para) in r.documents.iter().zip(group) {
            map.insert(doc.document_id.clone(), para.id.clone());
        }
        jobs.push(r.job_id);
    }
    let bar = super::ingest_bar(set.corpus.len() as u64)?;
    loop {
        let mut done = 0;
        let mut finished = true;
        for id in &jobs {
            let j = service.job(p, id)?;
            done += j.done();
            finished &= j.finished();
        }
        bar.set_position(done);
        if finished {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bar.finish_and_clear();
    tracing::info!(
        paragraphs = set.corpus.len(),
        secs = started.elapsed().as_secs_f64(),
        "evaluation corpus indexed"
    );
    Ok(map)
}

fn print(
    r: &Report,
    args: &AnswerArgs,
    split: Split,
    mode: Option<AnswerMode>,
) -> anyhow::Result<()> {
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "dataset": args.dataset, "split": split, "limit": args.limit, "seed": args.seed,
                "mode": mode.unwrap_or(AgentConfig::default().answer_mode),
                "min_support": args.min_support, "report": r,
            }))?
        );
        return Ok(());
    }
    println!(
        "{} questions ({} answerable, {} unanswerable), split {:?}",
        r.questions, r.answerable, r.unanswerable, split
    );
    println!("contains_gold   {:.3}", r.contains_gold);
    println!("cited_gold      {:.3}", r.cited_gold);
    println!("abstain_ok      {:.3}", r.abstain_ok);
    println!("false_abstain   {:.3}", r.false_abstain);
    println!(
        "answer words    p50 {:.0}  p90 {:.0}",
        r.words_p50, r.words_p90
    );
    println!(
        "turn latency    p50 {:.1} ms  p90 {:.1} ms (grounding p50 {:.1} ms, p90 {:.1} ms)",
        r.latency_p50_ms, r.latency_p90_ms, r.grounding_p50_ms, r.grounding_p90_ms
    );
    println!("grounded_share  {:.3}", r.grounded_share);
    Ok(())
}
