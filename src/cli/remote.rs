//! Commands against a running server, through the public HTTP API.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use groundwork::client::{Client, ClientError, FilePart};
use serde_json::{json, Value};

use super::{show, KbCommand, Progress};

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// `groundwork kb --server`.
pub fn kb(url: &str, key: Option<String>, cmd: KbCommand) -> anyhow::Result<()> {
    let client = Client::new(url, key)?;
    runtime()?.block_on(async move {
        match cmd {
            KbCommand::List => {
                let list: Value = client.get("/v1/kbs").await?;
                for v in list["items"].as_array().into_iter().flatten() {
                    println!(
                        "{}\t{}\t{} ready, {} queued, {} failed\t{} chunks",
                        v["name"].as_str().unwrap_or_default(),
                        v["id"].as_str().unwrap_or_default(),
                        v["stats"]["ready"],
                        v["stats"]["queued"],
                        v["stats"]["failed"],
                        v["stats"]["chunks"]
                    );
                }
            }
            KbCommand::Create {
                name,
                description,
                chunk_size,
                chunk_overlap,
            } => {
                let mut body = json!({ "name": name, "description": description });
                if let Some(max) = chunk_size {
                    body["chunking"] = json!({
                        "max_tokens": max,
                        "overlap_tokens": chunk_overlap.unwrap_or(max / 8)
                    });
                }
                let kb: Value = client.post("/v1/kbs", &body).await?;
                println!("created {} ({})", kb["name"], kb["id"]);
            }
            KbCommand::Delete { name } => {
                client.delete(&format!("/v1/kbs/{name}")).await?;
                println!("deleted {name}");
            }
        }
        anyhow::Ok(())
    })
}

/// `groundwork ingest --server`: uploads in groups of up to 16 files / 32 MiB, then follows
/// the jobs until every document is done.
pub fn ingest(url: &str, key: Option<String>, kb: &str, files: &[PathBuf]) -> anyhow::Result<()> {
    let client = Client::new(url, key)?;
    runtime()?.block_on(async move {
        match client.create_kb(kb).await {
            Ok(_) | Err(ClientError::Problem { status: 409, .. }) => {}
            Err(e) => return Err(e).context("creating the knowledge base"),
        }
        let started = Instant::now();
        let bar = super::ingest_bar(files.len() as u64)?;
        let mut jobs = Vec::new();
        let mut rejected = Vec::new();
        let mut group: Vec<FilePart> = Vec::new();
        let mut group_bytes = 0usize;
        for (i, path) in files.iter().enumerate() {
            let part = FilePart::read(path)?;
            group_bytes += part.bytes.len();
            group.push(part);
            let last = i + 1 == files.len();
            if group.len() == 16 || group_bytes >= 32 << 20 || last {
                // Each file is admitted or refused on its own; the receipt lists the refused.
                match client.upload(kb, &group, None).await {
                    Ok(r) => {
                        jobs.push(r["job_id"].as_str().unwrap_or_default().to_owned());
                        rejected.extend(refused_files(&r["refused"]));
                    }
                    Err(ClientError::Problem {
                        status: 415 | 413 | 422,
                        extra,
                        detail,
                        ..
                    }) => match extra.get("refused") {
                        Some(list) => rejected.extend(refused_files(list)),
                        None => rejected.push(detail),
                    },
                    Err(e) => return Err(e).context("uploading"),
                }
                group.clear();
                group_bytes = 0;
            }
        }
        loop {
            let mut p = Progress::default();
            let mut finished = true;
            let mut errors = Vec::new();
            for id in &jobs {
                let j: Value = client.job(id).await?;
                p.total += j["total"].as_u64().unwrap_or(0);
                p.done += j["done"].as_u64().unwrap_or(0);
                p.failed += j["failed"].as_u64().unwrap_or(0);
                p.chunks += j["chunks_embedded"].as_u64().unwrap_or(0);
                finished &= j["finished"].as_bool().unwrap_or(false);
                for e in j["errors"].as_array().into_iter().flatten() {
                    errors.push(format!(
                        "{} — {} ({})",
                        e["name"].as_str().unwrap_or_default(),
                        e["message"].as_str().unwrap_or_default(),
                        e["code"].as_str().unwrap_or_default()
                    ));
                }
            }
            show(&bar, p, started);
            if finished {
                bar.finish();
                println!(
                    "{} documents ({} failed, {} refused), {} chunks in {:.1} s",
                    p.total,
                    p.failed,
                    rejected.len(),
                    p.chunks,
                    started.elapsed().as_secs_f64()
                );
                for e in errors {
                    println!("  failed: {e}");
                }
                for r in rejected {
                    println!("  refused: {r}");
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}

/// `groundwork search --server`.
pub fn search(
    url: &str,
    key: Option<String>,
    kb: &str,
    query: &str,
    top_k: usize,
    mode: &str,
) -> anyhow::Result<Value> {
    let client = Client::new(url, key)?;
    Ok(runtime()?.block_on(client.search(kb, query, top_k, mode))?)
}

/// `groundwork reindex --server`: starts the reindex and follows it.
pub fn reindex(
    url: &str,
    key: Option<String>,
    kb: &str,
    model: Option<String>,
    chunking: Option<(u32, u32)>,
) -> anyhow::Result<()> {
    let client = Client::new(url, key)?;
    runtime()?.block_on(async move {
        let started = Instant::now();
        let mut body = json!({});
        if let Some(m) = model {
            body["embedding_model"] = json!(m);
        }
        if let Some((max_tokens, overlap_tokens)) = chunking {
            body["chunking"] =
                json!({ "max_tokens": max_tokens, "overlap_tokens": overlap_tokens });
        }
        let wf: Value = client
            .post(&format!("/v1/kbs/{kb}/reindex"), &body)
            .await
            .context("starting the reindex")?;
        let id = wf["id"].as_str().unwrap_or_default().to_owned();
        let bar = super::reindex_bar()?;
        loop {
            let view: Value = client.get(&format!("/v1/workflows/{id}")).await?;
            let status = super::show_workflow(&bar, &view);
            if matches!(status.as_str(), "completed" | "failed" | "cancelled") {
                return super::finish_reindex(&bar, &view, started);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}

/// `name: reason (code)` of each refused file of an upload answer.
fn refused_files(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "{}: {} ({})",
                r["name"].as_str().unwrap_or_default(),
                r["detail"].as_str().unwrap_or_default(),
                r["code"].as_str().unwrap_or_default()
            )
        })
        .collect()
}
