//! The local chat model: a quantized llama-family GGUF (SmolLM2-135M-Instruct by default) run
//! with candle on its own thread, fed by a bounded queue, one generation at a time, tokens
//! streamed back as they are decoded.
//!
//! Owns loading, prompt formatting, sampling (greedy, temperature, top-p, seed), stop
//! sequences and incremental decoding. It must never block an async worker thread nor know
//! about routes, budgets or HTTP.

mod gguf;
mod llama;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Mutex;

use std::io::Cursor;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::quantized_llama::ModelWeights;
use tokio::sync::mpsc;

pub use gguf::ChatFormat;

use super::types::{Delta, FinishReason, Message, Usage};
use crate::supervisor::{Supervisor, Thread};

/// Errors of the local chat model.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LocalError {
    /// The model file is missing or unreadable.
    #[error("local chat model: {0}")]
    Model(String),
    /// The request cannot be served (too long a prompt, a template error).
    #[error("{0}")]
    Invalid(String),
    /// The queue is full.
    #[error("the local model's queue is full")]
    Overloaded,
    /// The computation failed.
    #[error("local generation failed: {0}")]
    Compute(String),
}

impl From<candle_core::Error> for LocalError {
    fn from(e: candle_core::Error) -> Self {
        LocalError::Compute(e.to_string())
    }
}

/// Sampling parameters of one generation.
#[derive(Debug, Clone)]
pub struct Generate {
    /// The conversation.
    pub messages: Vec<Message>,
    /// 0 or absent with no top-p: greedy.
    pub temperature: Option<f32>,
    /// Nucleus mass.
    pub top_p: Option<f32>,
    /// Most new tokens.
    pub max_tokens: u32,
    /// Stop sequences (not included in the answer).
    pub stop: Vec<String>,
    /// Seed of the sampler (random when absent).
    pub seed: Option<u64>,
}

/// What a generation sends back.
pub type Events = mpsc::Receiver<Result<Delta, LocalError>>;

struct Job {
    params: Generate,
    tx: mpsc::Sender<Result<Delta, LocalError>>,
}

/// Handle to the model thread. Dropping it ends the thread after its current job.
pub struct LocalChat {
    queue: Mutex<Option<SyncSender<Job>>>,
    path: PathBuf,
    thread: Option<Thread>,
    /// Tokenizer and template read from the file's metadata (no weights), for counting.
    counter: Mutex<Option<std::sync::Arc<ChatFormat>>>,
}

/// The GGUF file in `path` (a file, or the first `.gguf` in a folder).
pub fn find_gguf(path: &Path) -> Result<PathBuf, LocalError> {
    if path.is_file() {
        return Ok(path.to_owned());
    }
    let entries = std::fs::read_dir(path).map_err(|e| {
        LocalError::Model(format!(
            "{}: {e} (run `python3 models/fetch.py`)",
            path.display()
        ))
    })?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    found.sort();
    found
        .into_iter()
        .next()
        .ok_or_else(|| LocalError::Model(format!("no .gguf file in {}", path.display())))
}

/// Which forward pass runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalEngine {
    /// Groundwork's own pass (see `llama`): f32 GEMM prefill, int8 decode, a KV cache reused
    /// across prompts that share a beginning. Models it cannot run fall back to `candle`.
    #[default]
    Native,
    /// candle-transformers' quantized llama: the reference the native pass is tested and
    /// benchmarked against.
    Candle,
}

/// A loaded forward pass.
enum Weights {
    Native(Box<llama::Llama>),
    Candle(Box<ModelWeights>),
}

/// Logits as the tensor the sampler reads (no copy).
fn logits_tensor(logits: Vec<f32>) -> Result<Tensor, LocalError> {
    let n = logits.len();
    Ok(Tensor::from_vec(logits, n, &Device::Cpu)?)
}

impl Weights {
    /// Keeps only the first `len` positions cached (the native pass keeps a prompt's, so the
    /// next prompt may reuse them; candle's cache is rebuilt by every prefill).
    fn keep(&mut self, len: usize) {
        if let Weights::Native(m) = self {
            m.truncate(len);
        }
    }

    /// Logits (as a tensor, for the sampler) after the whole prompt.
    fn prefill(&mut self, ids: &[u32]) -> Result<Tensor, LocalError> {
        match self {
            Weights::Native(m) => logits_tensor(m.prefill(ids)?),
            Weights::Candle(m) => {
                let input = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
                Ok(m.forward(&input, 0)?.squeeze(0)?)
            }
        }
    }

    /// Logits after one more token at position `pos`.
    fn step(&mut self, token: u32, pos: usize) -> Result<Tensor, LocalError> {
        match self {
            Weights::Native(m) => logits_tensor(m.step(token)?),
            Weights::Candle(m) => {
                let input = Tensor::new(&[token], &Device::Cpu)?.unsqueeze(0)?;
                Ok(m.forward(&input, pos)?.squeeze(0)?)
            }
        }
    }
}

struct Loaded {
    weights: Weights,
    /// Positions of the last prompt, kept in the native pass's cache.
    cached_prompt: usize,
    format: ChatFormat,
    context: usize,
    repeat_penalty: f32,
}

fn load(
    path: &Path,
    context: usize,
    repeat_penalty: f32,
    engine: LocalEngine,
) -> Result<Loaded, LocalError> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| LocalError::Model(format!("{}: {e}", path.display())))?;
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| LocalError::Model(format!("{}: {e}", path.display())))?;
    let format = ChatFormat::from_gguf(&content)?;
    let trained = content
        .metadata
        .get("llama.context_length")
        .and_then(|v| v.to_u32().ok())
        .map(|v| v as usize)
        .unwrap_or(context);
    let context = context.min(trained);
    // Both passes read the weights candle's SIMD kernels have, so they compute on the same
    // values (the native pass is checked against candle's answers).
    let (content, mut reader): (gguf_file::Content, Box<dyn ReadSeek>) = if content
        .tensor_infos
        .values()
        .any(|t| NO_SIMD.contains(&t.ggml_dtype))
    {
        let (content, bytes) = requantize(content, &mut file)?;
        (content, Box::new(bytes))
    } else {
        (content, Box::new(file))
    };
    if engine == LocalEngine::Native {
        match llama::Llama::load(&content, &mut reader, context)? {
            Some(model) => {
                return Ok(Loaded {
                    weights: Weights::Native(Box::new(model)),
                    cached_prompt: 0,
                    format,
                    context,
                    repeat_penalty,
                })
            }
            None => tracing::info!(
                model = %path.display(),
                "the native pass does not run this model's shape; using candle's"
            ),
        }
    }
    let weights = ModelWeights::from_gguf(content, &mut reader, &Device::Cpu)?;
    Ok(Loaded {
        weights: Weights::Candle(Box::new(weights)),
        cached_prompt: 0,
        format,
        context,
        repeat_penalty,
    })
}

/// A model file or its requantized copy in memory.
trait ReadSeek: std::io::Read + std::io::Seek {}
impl<T: std::io::Read + std::io::Seek> ReadSeek for T {}

/// Block formats whose CPU dot products candle has no SIMD kernel for (scalar code, 2–3×
/// slower than Q8_0, which has an AVX2 one).
const NO_SIMD: [GgmlDType; 3] = [GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q5_1];

/// Rewrites the tensors in [`NO_SIMD`] formats as Q8_0 (finer than the source, so the model's
/// answers barely change) into an in-memory GGUF the model loads from.
fn requantize(
    content: gguf_file::Content,
    file: &mut std::fs::File,
) -> Result<(gguf_file::Content, Cursor<Vec<u8>>), LocalError> {
    let started = std::time::Instant::now();
    let mut tensors = Vec::with_capacity(content.tensor_infos.len());
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let t = content.tensor(file, name, &Device::Cpu)?;
        let t = if NO_SIMD.contains(&t.dtype()) {
            QTensor::quantize(&t.dequantize(&Device::Cpu)?, GgmlDType::Q8_0)?
        } else {
            t
        };
        tensors.push((name.clone(), t));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut bytes = Cursor::new(Vec::new());
    gguf_file::write(&mut bytes, &metadata, &refs)?;
    bytes.set_position(0);
    let content = gguf_file::Content::read(&mut bytes)?;
    tracing::info!(
        secs = started.elapsed().as_secs_f64(),
        "local chat model requantized to Q8_0 for the CPU's SIMD kernels"
    );
    Ok((content, bytes))
}

impl LocalChat {
    /// Starts the model thread; the model loads on it at the first request (a load failure
    /// is reported to each request).
    /// `repeat_penalty` (1: none) divides the logits of tokens among the last 64 generated
    /// ones: small models otherwise loop on a sentence.
    pub fn start(
        path: &Path,
        queue: usize,
        context: usize,
        repeat_penalty: f32,
        engine: LocalEngine,
        supervisor: &Supervisor,
    ) -> Self {
        let (tx, rx) = sync_channel::<Job>(queue);
        let file = path.to_owned();
        let thread = supervisor
            .thread("groundwork-llm", move || {
                // Loaded at the first request, so a server that never chats locally never
                // spends the memory or the start-up time.
                let mut loaded: Option<Result<Loaded, LocalError>> = None;
                // The model's own pool, entered once per job: its parallel loops then start on
                // a pool thread (a loop too small to share runs inline), where from this thread
                // each of the ~250 loops of a decoded token was a job sent to the global pool
                // and waited for.
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                let pool = match rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("groundwork-llm-{i}"))
                    .build()
                {
                    Ok(pool) => pool,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the local model's threads");
                        return;
                    }
                };
                while let Ok(job) = rx.recv() {
                    if job.tx.is_closed() {
                        continue;
                    }
                    pool.install(|| {
                        let model = loaded.get_or_insert_with(|| {
                            load_logged(&file, context, repeat_penalty, engine)
                        });
                        match model {
                            Ok(model) => run(model, job),
                            Err(e) => {
                                let _ = job.tx.blocking_send(Err(e.clone()));
                            }
                        }
                    });
                }
            })
            .ok();
        Self {
            queue: Mutex::new(Some(tx)),
            path: path.to_owned(),
            thread,
            counter: Mutex::new(None),
        }
    }

    /// Exactly the prompt tokens a generation for `messages` will be billed (the rendered
    /// chat template, tokenized by the model's own tokenizer). Blocking: the first call reads
    /// the file's metadata.
    pub fn prompt_tokens(&self, messages: &[Message]) -> Result<u32, LocalError> {
        let format = {
            let mut slot = self.counter.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                Some(f) => f.clone(),
                None => {
                    let file = find_gguf(&self.path)?;
                    let mut f = std::fs::File::open(&file)
                        .map_err(|e| LocalError::Model(format!("{}: {e}", file.display())))?;
                    let content = gguf_file::Content::read(&mut f)
                        .map_err(|e| LocalError::Model(format!("{}: {e}", file.display())))?;
                    let format = std::sync::Arc::new(ChatFormat::from_gguf(&content)?);
                    *slot = Some(format.clone());
                    format
                }
            }
        };
        Ok(format.encode(&format.render(messages)?)?.len() as u32)
    }

    /// Where the model is read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a generation; its deltas arrive on the returned channel.
    pub fn generate(&self, params: Generate) -> Result<Events, LocalError> {
        let (tx, rx) = mpsc::channel(64);
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let Some(q) = queue.as_ref() else {
            return Err(LocalError::Model("the local model has stopped".into()));
        };
        match q.try_send(Job { params, tx }) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(LocalError::Overloaded),
            Err(TrySendError::Disconnected(_)) => {
                Err(LocalError::Model("the local model thread ended".into()))
            }
        }
    }

    /// Stops the thread after its current generation.
    pub fn shutdown(&self) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = &self.thread {
            t.join();
        }
    }
}

impl Drop for LocalChat {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The model in or beside `file`, its load logged either way.
fn load_logged(
    file: &Path,
    context: usize,
    repeat_penalty: f32,
    engine: LocalEngine,
) -> Result<Loaded, LocalError> {
    let started = std::time::Instant::now();
    let loaded = find_gguf(file).and_then(|f| load(&f, context, repeat_penalty, engine));
    match &loaded {
        Ok(_) => tracing::info!(
            model = %file.display(),
            secs = started.elapsed().as_secs_f64(),
            "local chat model loaded"
        ),
        Err(e) => tracing::error!(error = %e, "local chat model unavailable"),
    }
    loaded
}

fn run(model: &mut Loaded, job: Job) {
    let tx = job.tx.clone();
    let result = generate(model, job);
    // Positions computed while decoding are dropped: see `llama` on why answers must not
    // depend on the cache.
    model.weights.keep(model.cached_prompt);
    if let Err(e) = result {
        let _ = tx.blocking_send(Err(e));
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of one of `stops`.
fn held_back(text: &str, stops: &[String]) -> usize {
    let mut hold = 0;
    for s in stops {
        for (i, _) in s.char_indices().skip(1) {
            if text.ends_with(&s[..i]) {
                hold = hold.max(i);
            }
        }
    }
    hold
}

/// Greedy at temperature 0 (0.7 when unset), nucleus with a `top_p` in (0, 1), else
/// sampling over the whole vocabulary.
fn sampling_of(temperature: Option<f32>, top_p: Option<f32>) -> Sampling {
    let temperature = temperature.unwrap_or(0.7) as f64;
    if temperature <= 0.0 {
        return Sampling::ArgMax;
    }
    match top_p {
        Some(top_p) if top_p > 0.0 && top_p < 1.0 => Sampling::TopP {
            p: top_p as f64,
            temperature,
        },
        _ => Sampling::All { temperature },
    }
}

/// Where the first stop sequence begins in `text`, searching only where one could have
/// been completed since `emitted` bytes were sent.
fn stop_at(text: &str, emitted: usize, stops: &[String]) -> Option<usize> {
    let search_from = emitted.saturating_sub(stops.iter().map(String::len).max().unwrap_or(0));
    let search_from = (0..=search_from)
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    stops
        .iter()
        .filter_map(|s| {
            text[search_from..]
                .find(s.as_str())
                .map(|i| search_from + i)
        })
        .min()
}

fn generate(model: &mut Loaded, job: Job) -> Result<(), LocalError> {
    let p = &job.params;
    let prompt = model.format.render(&p.messages)?;
    let ids = model.format.encode(&prompt)?;
    if ids.len() + 1 >= model.context {
        return Err(LocalError::Invalid(format!(
            "the prompt is {} tokens; the local model reads at most {}",
            ids.len(),
            model.context
        )));
    }
    let budget = (p.max_tokens as usize).min(model.context - ids.len());
    let seed = p.seed.unwrap_or_else(rand::random);
    let mut sampler = LogitsProcessor::from_sampling(seed, sampling_of(p.temperature, p.top_p));
    model.cached_prompt = 0;
    let mut logits = model.weights.prefill(&ids)?;
    model.cached_prompt = ids.len();
    let mut out: Vec<u32> = Vec::new();
    let mut emitted = 0usize;
    let mut reason = FinishReason::Length;
    let mut cut_by_stop = false;
    for step in 0..budget {
        if model.repeat_penalty != 1.0 && !out.is_empty() {
            let recent = &out[out.len().saturating_sub(64)..];
            logits = candle_transformers::utils::apply_repeat_penalty(
                &logits,
                model.repeat_penalty,
                recent,
            )?;
        }
        let next = sampler.sample(&logits)?;
        if model.format.eos.contains(&next) {
            reason = FinishReason::Stop;
            break;
        }
        out.push(next);
        let text = model.format.decode(&out)?;
        // A multi-byte character split over tokens decodes to U+FFFD until it is whole.
        if !text.ends_with('\u{FFFD}') && text.len() > emitted {
            if let Some(cut) = stop_at(&text, emitted, &p.stop) {
                if cut > emitted
                    && job
                        .tx
                        .blocking_send(Ok(Delta::Text(text[emitted..cut].to_owned())))
                        .is_err()
                {
                    return Ok(());
                }
                reason = FinishReason::Stop;
                cut_by_stop = true;
                break;
            }
            let upto = text.len() - held_back(&text, &p.stop);
            if upto > emitted {
                if job
                    .tx
                    .blocking_send(Ok(Delta::Text(text[emitted..upto].to_owned())))
                    .is_err()
                {
                    return Ok(()); // the caller went away
                }
                emitted = upto;
            }
        }
        if step + 1 == budget {
            break;
        }
        logits = model.weights.step(next, ids.len() + step)?;
    }
    if !cut_by_stop {
        // Text held back for a stop sequence that never came is part of the answer.
        let text = model.format.decode(&out)?;
        let text = text.trim_end_matches('\u{FFFD}');
        if text.len() > emitted && text.is_char_boundary(emitted) {
            let _ = job
                .tx
                .blocking_send(Ok(Delta::Text(text[emitted..].to_owned())));
        }
    }
    let _ = job.tx.blocking_send(Ok(Delta::Finish {
        reason,
        usage: Some(Usage::new(ids.len() as u32, out.len() as u32)),
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{held_back, stop_at};

    #[test]
    fn stop_at_finds_the_earliest_stop_on_a_char_boundary() {
        let stops = vec!["\n\nQ:".to_owned(), "END".to_owned()];
        assert_eq!(stop_at("abc\n\nQ: more", 3, &stops), Some(3));
        assert_eq!(stop_at("abc END \n\nQ:", 5, &stops), Some(4));
        assert_eq!(stop_at("no stop here", 4, &stops), None);
        // The search start backs off to a character boundary.
        assert_eq!(stop_at("ééééé END", 10, &stops), Some(11));
    }

    #[test]
    fn text_that_may_begin_a_stop_sequence_is_held_back() {
        let stops = vec!["\nUser:".to_owned()];
        assert_eq!(held_back("Paris.\nUs", &stops), 3);
        assert_eq!(held_back("Paris.", &stops), 0);
        assert_eq!(held_back("Paris.\n", &stops), 1);
    }
}

/// The native pass against candle's on the default model (`python3 models/fetch.py`).
#[cfg(test)]
mod engines {
    use super::*;
    use crate::gateway::types::Role;

    fn load_engine(engine: LocalEngine) -> Loaded {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct");
        let path = find_gguf(&dir).expect("the default chat model (python3 models/fetch.py)");
        load(&path, 4096, 1.0, engine).expect("loads")
    }

    fn prompt(model: &Loaded, sources: &str, question: &str) -> Vec<u32> {
        let messages = [
            Message {
                role: Role::System,
                content: "Answer the question using only the numbered sources. Cite them as \
                          [1], [2]. If the sources do not contain the answer, say that it was \
                          not found."
                    .into(),
                name: None,
            },
            Message {
                role: Role::User,
                content: format!("Sources:\n{sources}\n\nQuestion: {question}"),
                name: None,
            },
        ];
        model
            .format
            .encode(&model.format.render(&messages).expect("template"))
            .expect("tokens")
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.to_vec1().expect("logits")
    }

    fn argmax(v: &[f32]) -> u32 {
        let mut best = 0;
        for (i, x) in v.iter().enumerate() {
            if *x > v[best] {
                best = i;
            }
        }
        best as u32
    }

    const CASES: [(&str, &str); 5] = [
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

    fn worst(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    }

    /// Greedy answers of the native pass are those of the exact pass (f32 everywhere) on five
    /// grounded prompts, and its logits stay closer to exact than candle's (the engine it
    /// replaced, which rounds every activation to int8) along the same tokens. Token identity
    /// with candle is reported, not required: candle's own rounding moves logits by up to
    /// about a unit, enough to break a near-tie either way.
    #[test]
    fn native_pass_answers_as_the_exact_pass_and_closer_to_it_than_candle() {
        let mut native = load_engine(LocalEngine::Native);
        let mut exact = load_engine(LocalEngine::Native);
        if let Weights::Native(m) = &mut exact.weights {
            m.exact();
        }
        let mut reference = load_engine(LocalEngine::Candle);
        let mut identical = 0;
        for (sources, question) in CASES {
            let ids = prompt(&native, sources, question);
            let mut n = values(&native.weights.prefill(&ids).expect("native"));
            let mut e = values(&exact.weights.prefill(&ids).expect("exact"));
            let mut c = values(&reference.weights.prefill(&ids).expect("candle"));
            let (mut native_err, mut candle_err) = (0f32, 0f32);
            let mut same_as_candle = true;
            for step in 0..32 {
                let mine = argmax(&n);
                assert_eq!(mine, argmax(&e), "{question}: step {step}");
                same_as_candle &= mine == argmax(&c);
                native_err = native_err.max(worst(&n, &e));
                candle_err = candle_err.max(worst(&c, &e));
                if native.format.eos.contains(&mine) {
                    break;
                }
                let pos = ids.len() + step;
                n = values(&native.weights.step(mine, pos).expect("native"));
                e = values(&exact.weights.step(mine, pos).expect("exact"));
                c = values(&reference.weights.step(mine, pos).expect("candle"));
            }
            eprintln!(
                "{question}: largest logit error native {native_err:.3}, candle {candle_err:.3}"
            );
            assert!(
                native_err <= candle_err,
                "{question}: {native_err} > {candle_err}"
            );
            identical += usize::from(same_as_candle);
        }
        eprintln!(
            "{identical} of {} greedy answers token-identical to candle's",
            CASES.len()
        );
    }

    /// The cache reused across prompts changes no logit: a prompt read after another that
    /// shares its beginning (or after itself) gives bit-identical logits to a fresh model.
    #[test]
    fn reused_prefix_gives_the_logits_of_a_fresh_model() {
        let mut warm = load_engine(LocalEngine::Native);
        let first = prompt(&warm, CASES[0].0, CASES[0].1);
        let second = prompt(
            &warm,
            CASES[0].0,
            "Until when was it the tallest structure?",
        );
        let common = first
            .iter()
            .zip(&second)
            .take_while(|(a, b)| a == b)
            .count();
        assert!(
            common > 40,
            "the prompts share their system part and sources"
        );
        let a1 = values(&warm.weights.prefill(&first).expect("first"));
        let b_warm = values(&warm.weights.prefill(&second).expect("second"));
        let a_again = values(&warm.weights.prefill(&first).expect("again"));
        let mut cold = load_engine(LocalEngine::Native);
        let b_cold = values(&cold.weights.prefill(&second).expect("cold"));
        assert_eq!(b_warm, b_cold);
        assert_eq!(a1, a_again);
    }
}
