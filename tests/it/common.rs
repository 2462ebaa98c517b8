//! Shared paths and fixtures for the integration tests.

use std::path::PathBuf;
use std::sync::OnceLock;

use groundwork::embed::{BertEmbedder, EmbedOptions};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The default embedder's folder; panics with the fix when it has not been fetched.
pub fn model_dir() -> PathBuf {
    let dir = root().join("models").join("all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "the default model is missing: run `python3 models/fetch.py` (the test script does)"
    );
    dir
}

/// One embedder shared by every test of the binary (loading costs ~0.2 s and 90 MB).
pub fn embedder() -> &'static BertEmbedder {
    static EMBEDDER: OnceLock<BertEmbedder> = OnceLock::new();
    EMBEDDER.get_or_init(|| {
        BertEmbedder::load(&model_dir(), EmbedOptions::default()).expect("load default embedder")
    })
}

/// The team's shared data (`../shared`), or `None` with a printed notice when absent.
pub fn shared(sub: &str) -> Option<PathBuf> {
    let dir = root().join("..").join("shared").join(sub);
    if dir.exists() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: {} is absent (the team's shared data is not here)",
            dir.display()
        );
        None
    }
}

/// The built `groundwork` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_groundwork"))
}

/// Whether this run keeps records in PostgreSQL (`GROUNDWORK_TEST_STORE=postgres`, with the
/// throwaway server of `tests/pg.sh` at `GROUNDWORK_TEST_PG_URL`) instead of SQLite.
pub fn on_postgres() -> bool {
    std::env::var("GROUNDWORK_TEST_STORE").is_ok_and(|s| s == "postgres")
}

/// The environment that points a `groundwork` process at the store of `data_dir`: nothing for
/// SQLite (the store is in the directory); on PostgreSQL, a database of the test server named
/// after the directory (created on first use), so that a restart finds the same records.
pub fn store_env(data_dir: &std::path::Path) -> Vec<(String, String)> {
    if !on_postgres() {
        return Vec::new();
    }
    let admin = std::env::var("GROUNDWORK_TEST_PG_URL").expect(
        "GROUNDWORK_TEST_STORE=postgres needs GROUNDWORK_TEST_PG_URL (tests/run.sh sets it)",
    );
    let path = std::path::absolute(data_dir).expect("absolute path");
    let name = format!(
        "t_{}",
        &groundwork::util::sha256_hex(path.to_string_lossy().as_bytes())[..20]
    );
    let mut client = postgres::Client::connect(&admin, postgres::NoTls).expect("test PostgreSQL");
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .expect("pg_database")
        .is_some();
    if !exists {
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create test database");
    }
    let url = match admin.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("GROUNDWORK_TEST_PG_URL has no database part: {admin}"),
    };
    vec![
        ("GROUNDWORK__STORE__URL".to_owned(), url),
        // Tests restart killed servers: a killed server's runs are taken over 5 s after its
        // last renewal instead of the default 15 (on SQLite a restart takes them at once).
        (
            "GROUNDWORK__WORKFLOW__LEASE_SECS".to_owned(),
            "5".to_owned(),
        ),
    ]
}

/// `groundwork` run from the repository root against the store of `data_dir`.
pub fn cli(data_dir: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(bin());
    cmd.current_dir(root()).envs(store_env(data_dir));
    cmd
}

/// Makes sure the test suite's Python environments exist (`tests/py/setup.sh`: once, then a
/// checksum test).
pub fn python_envs() {
    let status = std::process::Command::new("bash")
        .arg(root().join("tests/py/setup.sh"))
        .status()
        .expect("tests/py/setup.sh");
    assert!(status.success(), "tests/py/setup.sh failed");
}

/// Runs a Python client script of `tests/py` with the interpreter of environment `venv`
/// (e.g. `.venv-test`), arguments and environment; it must exit 0 and print "all checks
/// passed" (what a failing one printed is shown).
pub fn python_checks(venv: &str, script: &str, args: &[&str], env: &[(&str, &str)]) {
    let out = std::process::Command::new(root().join(venv).join("bin/python"))
        .arg(root().join("tests/py").join(script))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "{script} {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes a tiny BERT model folder (`hidden` dimensions, one layer, deterministic weights,
/// the default model's tokenizer) for tests that need a second model of another dimension.
pub fn tiny_bert(dir: &std::path::Path, hidden: usize) {
    use candle_core::{Device, Tensor};
    std::fs::create_dir_all(dir).expect("model dir");
    let tokenizer = model_dir().join("tokenizer.json");
    std::fs::copy(&tokenizer, dir.join("tokenizer.json")).expect("copy tokenizer");
    let vocab: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&tokenizer).expect("tokenizer")).expect("json");
    let vocab_size = vocab["model"]["vocab"]
        .as_object()
        .map(|v| v.len())
        .expect("wordpiece vocabulary");
    let inter = hidden * 2;
    let config = serde_json::json!({
        "hidden_size": hidden, "num_attention_heads": 2, "num_hidden_layers": 1,
        "intermediate_size": inter, "max_position_embeddings": 512, "type_vocab_size": 2,
        "vocab_size": vocab_size, "layer_norm_eps": 1e-12, "hidden_act": "gelu",
        "model_type": "bert"
    });
    std::fs::write(dir.join("config.json"), config.to_string()).expect("config");
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut tensor = |shape: &[usize], scale: f32| {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale
            })
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu).expect("tensor")
    };
    let ones = |n: usize| Tensor::ones(n, candle_core::DType::F32, &Device::Cpu).expect("ones");
    let zeros = |n: usize| Tensor::zeros(n, candle_core::DType::F32, &Device::Cpu).expect("zeros");
    let mut t = std::collections::HashMap::new();
    t.insert(
        "embeddings.word_embeddings.weight".to_owned(),
        tensor(&[vocab_size, hidden], 0.5),
    );
    t.insert(
        "embeddings.position_embeddings.weight".to_owned(),
        tensor(&[512, hidden], 0.05),
    );
    t.insert(
        "embeddings.token_type_embeddings.weight".to_owned(),
        tensor(&[2, hidden], 0.05),
    );
    t.insert("embeddings.LayerNorm.weight".to_owned(), ones(hidden));
    t.insert("embeddings.LayerNorm.bias".to_owned(), zeros(hidden));
    let p = "encoder.layer.0";
    for name in [
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
    ] {
        t.insert(format!("{p}.{name}.weight"), tensor(&[hidden, hidden], 0.2));
        t.insert(format!("{p}.{name}.bias"), zeros(hidden));
    }
    t.insert(
        format!("{p}.intermediate.dense.weight"),
        tensor(&[inter, hidden], 0.2),
    );
    t.insert(format!("{p}.intermediate.dense.bias"), zeros(inter));
    t.insert(
        format!("{p}.output.dense.weight"),
        tensor(&[hidden, inter], 0.2),
    );
    t.insert(format!("{p}.output.dense.bias"), zeros(hidden));
    for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
        t.insert(format!("{p}.{norm}.weight"), ones(hidden));
        t.insert(format!("{p}.{norm}.bias"), zeros(hidden));
    }
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).expect("weights");
}

/// Writes a tiny cross-encoder folder as sentence-transformers saves one
/// (`BertForSequenceClassification`: `bert.`-prefixed encoder weights of [`tiny_bert`], a pooler
/// and a one-output classifier; deterministic weights).
pub fn tiny_cross_encoder(dir: &std::path::Path) {
    use candle_core::{Device, Tensor};
    let hidden = 32;
    tiny_bert(dir, hidden);
    let path = dir.join("model.safetensors");
    let encoder = candle_core::safetensors::load(&path, &Device::Cpu).expect("weights");
    let mut t: std::collections::HashMap<String, Tensor> = encoder
        .into_iter()
        .map(|(k, v)| (format!("bert.{k}"), v))
        .collect();
    // A fixed, non-trivial head: alternating signs so that passages score differently.
    let pooler: Vec<f32> = (0..hidden * hidden)
        .map(|i| ((i * 7919 % 97) as f32 / 97.0 - 0.5) * 0.6)
        .collect();
    let classifier: Vec<f32> = (0..hidden)
        .map(|i| if i % 2 == 0 { 0.8 } else { -0.6 })
        .collect();
    let cpu = &Device::Cpu;
    t.insert(
        "bert.pooler.dense.weight".into(),
        Tensor::from_vec(pooler, (hidden, hidden), cpu).expect("pooler"),
    );
    t.insert(
        "bert.pooler.dense.bias".into(),
        Tensor::zeros(hidden, candle_core::DType::F32, cpu).expect("bias"),
    );
    t.insert(
        "classifier.weight".into(),
        Tensor::from_vec(classifier, (1, hidden), cpu).expect("classifier"),
    );
    t.insert(
        "classifier.bias".into(),
        Tensor::from_vec(vec![0.1f32], 1, cpu).expect("bias"),
    );
    candle_core::safetensors::save(&t, &path).expect("weights");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).expect("config"))
            .expect("json");
    for (k, v) in [
        (
            "architectures",
            serde_json::json!(["BertForSequenceClassification"]),
        ),
        ("id2label", serde_json::json!({"0": "LABEL_0"})),
        ("label2id", serde_json::json!({"LABEL_0": 0})),
        ("hidden_dropout_prob", serde_json::json!(0.0)),
        ("attention_probs_dropout_prob", serde_json::json!(0.0)),
        ("initializer_range", serde_json::json!(0.02)),
        ("pad_token_id", serde_json::json!(0)),
        ("classifier_dropout", serde_json::Value::Null),
    ] {
        config[k] = v;
    }
    std::fs::write(dir.join("config.json"), config.to_string()).expect("config");
}
