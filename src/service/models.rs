//! The embedding models the service can use: the default one loaded at start, and others a
//! reindex switches knowledge bases to (named in `[embed.models]` or given as a folder),
//! loaded on first use and kept.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::{Result, ServiceError};
use crate::embed::{BertEmbedder, EmbedOptions, Embedder};
use crate::store::Kb;

/// Loaded embedders by model id.
pub struct Models {
    default: Arc<dyn Embedder>,
    named: BTreeMap<String, PathBuf>,
    /// How models loaded for a reindex or an older knowledge base are run.
    options: EmbedOptions,
    loaded: RwLock<HashMap<String, Arc<dyn Embedder>>>,
}

/// A model chosen for a reindex.
pub struct Resolved {
    /// The embedder.
    pub embedder: Arc<dyn Embedder>,
    /// Folder it was loaded from (`None` for the default model).
    pub source: Option<String>,
}

impl Models {
    /// The registry around the default embedder.
    pub fn new(
        default: Arc<dyn Embedder>,
        named: BTreeMap<String, PathBuf>,
        options: EmbedOptions,
    ) -> Self {
        let mut loaded = HashMap::new();
        loaded.insert(default.model_id().to_owned(), default.clone());
        Self {
            default,
            named,
            options,
            loaded: RwLock::new(loaded),
        }
    }

    /// The model new knowledge bases use.
    pub fn default_model(&self) -> &Arc<dyn Embedder> {
        &self.default
    }

    fn load(&self, dir: &Path) -> Result<Arc<dyn Embedder>> {
        let embedder: Arc<dyn Embedder> = Arc::new(BertEmbedder::load(dir, self.options.clone())?);
        let mut loaded = self.loaded.write().unwrap_or_else(|p| p.into_inner());
        Ok(loaded
            .entry(embedder.model_id().to_owned())
            .or_insert(embedder)
            .clone())
    }

    /// The embedder a knowledge base's vectors come from (loaded from its recorded folder
    /// when needed).
    pub fn for_kb(&self, kb: &Kb) -> Result<Arc<dyn Embedder>> {
        if let Some(e) = self
            .loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&kb.embedding_model)
        {
            return Ok(e.clone());
        }
        let unavailable = || {
            ServiceError::Invalid(format!(
                "knowledge base `{}` was embedded with `{}`, which this server cannot load; \
                 reindex it or start the server with that model (bm25 search still works)",
                kb.name, kb.embedding_model
            ))
        };
        let source = kb.model_source.as_deref().ok_or_else(unavailable)?;
        let embedder = self.load(Path::new(source)).map_err(|e| {
            tracing::warn!(kb = %kb.name, error = %e, "cannot load the knowledge base's model");
            unavailable()
        })?;
        if embedder.model_id() != kb.embedding_model {
            return Err(unavailable());
        }
        Ok(embedder)
    }

    /// A model named by the caller: the default model (by id or short name), a name from
    /// `[embed.models]`, or an absolute path to a model folder.
    pub fn resolve(&self, spec: &str) -> Result<Resolved> {
        let default_id = self.default.model_id();
        let short = default_id.split('@').next().unwrap_or_default();
        if spec == default_id || spec == short {
            return Ok(Resolved {
                embedder: self.default.clone(),
                source: None,
            });
        }
        let dir = match self.named.get(spec) {
            Some(dir) => dir.clone(),
            None if Path::new(spec).is_absolute() && Path::new(spec).is_dir() => {
                PathBuf::from(spec)
            }
            // A field of the request that names nothing: 422 (a 404 would say the knowledge
            // base the request is addressed to is missing).
            None => {
                tracing::debug!(%spec, default = %short, named = ?self.named.keys().collect::<Vec<_>>(),
                    "unknown embedding model");
                return Err(ServiceError::Invalid(format!(
                    "embedding_model `{spec}` is not the default model ({short}), a name from \
                     [embed.models] or an absolute path to a model folder"
                )));
            }
        };
        let dir = dir.canonicalize().unwrap_or(dir);
        let embedder = self.load(&dir).map_err(|e| {
            ServiceError::Invalid(format!("cannot load the model in {}: {e}", dir.display()))
        })?;
        Ok(Resolved {
            source: Some(dir.display().to_string()),
            embedder,
        })
    }
}
