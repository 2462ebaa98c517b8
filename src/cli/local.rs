//! Commands that open the data directory themselves (the server among them).

use groundwork::api::dto;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use groundwork::config::Config;
use groundwork::embed::{BertEmbedder, EmbedOptions, Embedder};
use groundwork::index::SearchMode;
use groundwork::ingest::isolate::Isolation;
use groundwork::service::{self, CreateKb, Principal, SearchParams, Service, ServiceError, Upload};
use groundwork::store::{ChunkingStamp, Scope};

use super::{show, KbCommand, KeysCommand, Progress};

/// Arguments of `groundwork serve`.
#[derive(clap::Args, Debug)]
pub struct LocalArgs {
    /// Folders to ingest at start into a knowledge base named after the folder (unchanged
    /// files are recognised and not embedded again).
    #[arg(long = "seed")]
    pub seeds: Vec<PathBuf>,
    /// Address to listen on (overrides `server.bind`).
    #[arg(long)]
    pub bind: Option<std::net::SocketAddr>,
}

fn load_embedder(config: &Config) -> anyhow::Result<Arc<dyn Embedder>> {
    let dir = config.model_dir(&std::env::current_dir()?);
    let started = Instant::now();
    let embedder = BertEmbedder::load(
        &dir,
        EmbedOptions {
            batch_size: config.embed.batch_size,
            precision: config.embed.precision,
            ..EmbedOptions::default()
        },
    )
    .with_context(|| {
        format!(
            "loading the embedding model from {} (run `python3 models/fetch.py` to fetch it)",
            dir.display()
        )
    })?;
    tracing::info!(
        model = embedder.model_id(),
        ms = started.elapsed().as_millis() as u64,
        "embedder loaded"
    );
    Ok(Arc::new(embedder))
}

pub(super) fn open(config: Config) -> anyhow::Result<Service> {
    let embedder = load_embedder(&config)?;
    let dir = config.data_dir.clone();
    groundwork::app::open(config, embedder, Isolation::current_exe()?)
        .with_context(|| format!("opening the data directory {}", dir.display()))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gw-http")
        .build()?)
}

/// SIGINT or SIGTERM, with both handlers installed before this returns: the caller announces
/// "listening" only after, so a signal sent as soon as it reads that line stops the server
/// gracefully instead of killing it (a handler installed on the future's first poll left a
/// window where the default action still applied).
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

fn ensure_kb(service: &Service, p: &Principal, name: &str) -> anyhow::Result<()> {
    match service.create_kb(
        p,
        CreateKb {
            name: name.to_owned(),
            ..CreateKb::default()
        },
    ) {
        Ok(_) | Err(ServiceError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Uploads files in request-sized groups, waiting while the queue is full. Returns the job
/// ids and the number of files skipped as unsupported.
fn submit(
    service: &Service,
    p: &Principal,
    kb: &str,
    files: &[PathBuf],
) -> anyhow::Result<(Vec<String>, usize)> {
    let per_request = service.config().ingest.max_files_per_request.clamp(1, 16);
    let mut jobs = Vec::new();
    let mut skipped = 0;
    for group in files.chunks(per_request) {
        let mut uploads = Vec::new();
        for path in group {
            let bytes = fs_err::read(path)?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Err(e) = groundwork::ingest::detect::detect(&bytes, Some(&name)) {
                tracing::warn!(file = %path.display(), error = %e, "skipped");
                skipped += 1;
                continue;
            }
            uploads.push(Upload {
                name,
                bytes: bytes.into(),
                metadata: Default::default(),
                declared: None,
                password: None,
            });
        }
        if uploads.is_empty() {
            continue;
        }
        loop {
            match service.upload(p, kb, uploads.clone(), None) {
                Ok(r) => {
                    for f in &r.refused {
                        tracing::warn!(file = %f.name, code = %f.code, error = %f.detail, "refused");
                    }
                    skipped += r.refused.len();
                    jobs.push(r.job_id);
                    break;
                }
                Err(ServiceError::AllRefused(refused)) => {
                    for f in &refused {
                        tracing::warn!(file = %f.name, code = %f.code, error = %f.detail, "refused");
                    }
                    skipped += refused.len();
                    break;
                }
                Err(ServiceError::QueueFull { retry_after, .. }) => {
                    std::thread::sleep(Duration::from_secs(retry_after.min(2)))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok((jobs, skipped))
}

fn progress(service: &Service, p: &Principal, jobs: &[String]) -> anyhow::Result<(Progress, bool)> {
    let mut total = Progress::default();
    let mut finished = true;
    for id in jobs {
        let j = service.job(p, id)?;
        total.total += j.total;
        total.done += j.done();
        total.failed += j.failed;
        total.chunks += j.chunks_embedded;
        finished &= j.finished();
    }
    Ok((total, finished))
}

/// `groundwork serve`.
pub fn serve(config: Config, args: LocalArgs) -> anyhow::Result<()> {
    let mut config = config;
    if let Some(bind) = args.bind {
        config.server.bind = bind;
    }
    let bind = config.server.bind;
    let service = open(config)?;
    if service.demo_mode() {
        if !bind.ip().is_loopback() {
            service.shutdown();
            bail!(
                "no API key exists, so the server may only listen on loopback (asked: {bind}); \
                 create one with `groundwork keys create --tenant NAME` first"
            );
        }
        tracing::warn!(
            "demo mode: no API key exists, every request acts as tenant `{}`; listening on loopback only",
            service::auth::DEMO_TENANT
        );
    }
    let p = service.local_principal(service::auth::DEMO_TENANT)?;
    for dir in &args.seeds {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("a seed folder needs a name")?;
        ensure_kb(&service, &p, &name)?;
        let files = super::collect_files(std::slice::from_ref(dir))?;
        let (jobs, skipped) = submit(&service, &p, &name, &files)?;
        tracing::info!(kb = %name, files = files.len(), skipped, jobs = jobs.len(), "seed folder submitted");
    }
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("binding {bind}"))?;
        let addr = listener.local_addr()?;
        service.advertise(addr);
        let stop = shutdown_signal()?;
        tracing::info!(%addr, "listening");
        println!("listening on http://{addr}");
        let agents = groundwork::app::agents(&service);
        groundwork::api::serve(service, agents, listener, stop).await?;
        anyhow::Ok(())
    })
}

/// `groundwork kb` on the data directory.
pub fn kb(config: Config, tenant: &str, cmd: KbCommand) -> anyhow::Result<()> {
    let service = open(config)?;
    let p = service.local_principal(tenant)?;
    let out = (|| -> anyhow::Result<()> {
        match cmd {
            KbCommand::List => {
                for v in service.list_kbs(&p)? {
                    println!(
                        "{}\t{}\t{} ready, {} queued, {} failed\t{} chunks",
                        v.kb.name,
                        v.kb.id,
                        v.stats.ready,
                        v.stats.queued,
                        v.stats.failed,
                        v.stats.chunks
                    );
                }
            }
            KbCommand::Create {
                name,
                description,
                chunk_size,
                chunk_overlap,
            } => {
                let chunking = chunk_size.map(|max| ChunkingStamp {
                    max_tokens: max,
                    overlap_tokens: chunk_overlap.unwrap_or(max / 8),
                });
                let v = service.create_kb(
                    &p,
                    CreateKb {
                        name,
                        description,
                        embedding_model: None,
                        chunking,
                        rerank: None,
                    },
                )?;
                println!("created {} ({})", v.kb.name, v.kb.id);
            }
            KbCommand::Delete { name } => {
                service.delete_kb(&p, &name)?;
                println!("deleted {name}");
            }
        }
        Ok(())
    })();
    service.shutdown();
    out
}

/// `groundwork ingest` on the data directory: waits until every document is done.
pub fn ingest(config: Config, tenant: &str, kb: &str, files: &[PathBuf]) -> anyhow::Result<()> {
    let service = open(config)?;
    let p = service.local_principal(tenant)?;
    let out = (|| -> anyhow::Result<()> {
        ensure_kb(&service, &p, kb)?;
        let started = Instant::now();
        let bar = super::ingest_bar(files.len() as u64)?;
        let (jobs, skipped) = submit(&service, &p, kb, files)?;
        loop {
            let (prog, finished) = progress(&service, &p, &jobs)?;
            show(&bar, prog, started);
            if finished {
                bar.finish();
                println!(
                    "{} documents ({} failed, {} skipped as unsupported), {} chunks in {:.1} s",
                    prog.total,
                    prog.failed,
                    skipped,
                    prog.chunks,
                    started.elapsed().as_secs_f64()
                );
                for id in &jobs {
                    for e in service.job(&p, id)?.errors {
                        println!("  failed: {} — {} ({})", e.name, e.message, e.code);
                    }
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    })();
    service.shutdown();
    out
}

/// `groundwork search` on the data directory.
pub fn search(
    config: Config,
    tenant: &str,
    kb: &str,
    query: &str,
    top_k: usize,
    mode: &str,
) -> anyhow::Result<serde_json::Value> {
    let mode: SearchMode = serde_json::from_value(serde_json::Value::String(mode.to_owned()))
        .context("mode must be dense, bm25 or hybrid")?;
    let service = open(config)?;
    let p = service.local_principal(tenant)?;
    let out = service.search(
        &p,
        kb,
        &SearchParams {
            query: query.to_owned(),
            top_k: Some(top_k),
            mode,
            ..SearchParams::default()
        },
    );
    service.shutdown();
    let found = out?;
    let (kb_id, results) = (found.kb_id, found.hits);
    // The server's shapes, so that both modes of the CLI print the same JSON.
    let results: Vec<dto::SearchHit> = dto::all(results);
    Ok(serde_json::json!({ "kb_id": kb_id, "results": results }))
}

/// `groundwork keys` (the store only; allowed beside a running server).
pub fn keys(config: Config, cmd: KeysCommand) -> anyhow::Result<()> {
    let store = groundwork::app::open_stores(&config)?.store;
    match cmd {
        KeysCommand::Create {
            tenant,
            scopes,
            name,
        } => {
            let scopes = scopes
                .split(',')
                .map(|s| Scope::parse(s).with_context(|| format!("unknown scope `{s}`")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let key = service::auth::create_key(store.as_ref(), &tenant, &name, &scopes)?;
            eprintln!(
                "created key {} for tenant `{}` with scopes {:?}; it is shown only once \
                 (a running server in demo mode needs a restart to require keys):",
                key.key_id, key.tenant, key.scopes
            );
            println!("{}", key.secret);
        }
        KeysCommand::List => {
            for k in store.list_keys()? {
                let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    k.key_id,
                    k.tenant_name,
                    scopes.join(","),
                    k.name,
                    if k.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "live"
                    }
                );
            }
        }
        KeysCommand::Revoke { key_id } => {
            if store.revoke_key(&key_id)? {
                println!("revoked {key_id}");
            } else {
                bail!("no live key `{key_id}`");
            }
        }
    }
    Ok(())
}

/// `groundwork reindex` on the data directory: runs the reindex workflow in this process,
/// with a progress bar (interrupted, it resumes at the next start of the data directory).
pub fn reindex(
    config: Config,
    tenant: &str,
    kb: &str,
    model: Option<String>,
    chunking: Option<(u32, u32)>,
) -> anyhow::Result<()> {
    let service = open(config)?;
    let p = service.local_principal(tenant)?;
    let out = (|| -> anyhow::Result<()> {
        let started = Instant::now();
        let wf = service.reindex(
            &p,
            kb,
            service::ReindexRequest {
                embedding_model: model,
                chunking: chunking.map(|(max_tokens, overlap_tokens)| ChunkingStamp {
                    max_tokens,
                    overlap_tokens,
                }),
                ..Default::default()
            },
        )?;
        let bar = super::reindex_bar()?;
        loop {
            let view =
                serde_json::to_value(dto::WorkflowView::from(service.workflow(&p, &wf.id)?))?;
            let status = super::show_workflow(&bar, &view);
            if matches!(status.as_str(), "completed" | "failed" | "cancelled") {
                return super::finish_reindex(&bar, &view, started);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    })();
    service.shutdown();
    out
}
