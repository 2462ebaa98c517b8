//! A typed client of the HTTP API, used by the CLI's `--server` mode, the tests and the
//! benchmarks. It speaks only the public wire format.

use std::path::Path;
use std::time::Duration;

use reqwest::{multipart, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a problem document.
    #[error("{status} {code}: {detail}")]
    Problem {
        /// HTTP status.
        status: u16,
        /// Stable error code.
        code: String,
        /// Message.
        detail: String,
        /// Seconds to wait (429/503).
        retry_after: Option<u64>,
        /// The problem's other members (e.g. `refused` files of an upload).
        extra: Box<serde_json::Map<String, serde_json::Value>>,
    },
    /// The server could not be reached or answered something unreadable.
    #[error("request failed: {0}")]
    Transport(#[from] reqwest::Error),
    /// A local file could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Result alias for this module.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// One file to upload.
pub struct FilePart {
    /// Name sent to the server.
    pub name: String,
    /// Content.
    pub bytes: Vec<u8>,
}

impl FilePart {
    /// Reads a file from disk.
    pub fn read(path: &Path) -> Result<Self> {
        Ok(Self {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "document".into()),
            bytes: fs_err::read(path)?,
        })
    }
}

/// A client of one server.
#[derive(Clone)]
pub struct Client {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client of the server at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, key: Option<String>) -> Result<Self> {
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            key,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(600))
                .build()?,
        })
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    async fn answer<T: DeserializeOwned>(res: reqwest::Response) -> Result<T> {
        let status = res.status();
        if status.is_success() {
            return Ok(res.json().await?);
        }
        let retry_after = res
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body: Value = res.json().await.unwrap_or(Value::Null);
        Err(ClientError::Problem {
            status: status.as_u16(),
            code: body["code"].as_str().unwrap_or("unknown").to_owned(),
            detail: body["detail"].as_str().unwrap_or("").to_owned(),
            retry_after,
            extra: Box::new(body.as_object().cloned().unwrap_or_default()),
        })
    }

    /// `GET` a path, decoding JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        Self::answer(self.req(reqwest::Method::GET, path).send().await?).await
    }

    /// `POST` JSON to a path, decoding JSON.
    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T> {
        Self::answer(
            self.req(reqwest::Method::POST, path)
                .json(body)
                .send()
                .await?,
        )
        .await
    }

    /// `DELETE` a path.
    pub async fn delete(&self, path: &str) -> Result<()> {
        let res = self.req(reqwest::Method::DELETE, path).send().await?;
        if res.status() == StatusCode::NO_CONTENT {
            return Ok(());
        }
        Self::answer::<Value>(res).await.map(|_| ())
    }

    /// Creates a knowledge base.
    pub async fn create_kb(&self, name: &str) -> Result<Value> {
        self.post("/v1/kbs", &json!({ "name": name })).await
    }

    /// Uploads files in one multipart request; retries while the queue is full.
    pub async fn upload(
        &self,
        kb: &str,
        files: &[FilePart],
        metadata: Option<&Value>,
    ) -> Result<Value> {
        loop {
            let mut form = multipart::Form::new();
            for f in files {
                form = form.part(
                    "file",
                    multipart::Part::bytes(f.bytes.clone()).file_name(f.name.clone()),
                );
            }
            if let Some(m) = metadata {
                form = form.text("metadata", m.to_string());
            }
            let res = self
                .req(reqwest::Method::POST, &format!("/v1/kbs/{kb}/documents"))
                .multipart(form)
                .send()
                .await?;
            match Self::answer(res).await {
                Err(ClientError::Problem {
                    status: 429,
                    retry_after,
                    ..
                }) => tokio::time::sleep(Duration::from_secs(retry_after.unwrap_or(1))).await,
                other => return other,
            }
        }
    }

    /// Searches a knowledge base.
    pub async fn search(&self, kb: &str, query: &str, top_k: usize, mode: &str) -> Result<Value> {
        self.post(
            &format!("/v1/kbs/{kb}/search"),
            &json!({ "query": query, "top_k": top_k, "mode": mode }),
        )
        .await
    }

    /// A job's progress.
    pub async fn job(&self, id: &str) -> Result<Value> {
        self.get(&format!("/v1/jobs/{id}")).await
    }
}
