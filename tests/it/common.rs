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
