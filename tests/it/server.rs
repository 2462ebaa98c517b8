//! A real `groundwork serve` child process on an ephemeral loopback port, and a small blocking
//! HTTP client for talking to it the way any client would.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::{multipart, Client, Response};
use serde_json::{json, Value};

use crate::common::{cli, model_dir};

/// A running server.
pub struct TestServer {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Bearer key sent by [`TestServer::http`]'s helpers (none in demo mode).
    pub key: Option<String>,
    http: Client,
}

impl TestServer {
    /// Starts `groundwork serve` on `data_dir` with extra environment.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let log = std::fs::File::create(data_dir.with_extension("log")).expect("server log");
        let mut child = cli(data_dir)
            .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .arg("--model")
            .arg(model_dir())
            .env("RUST_LOG", "warn,groundwork=info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn groundwork serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let log =
                    std::fs::read_to_string(data_dir.with_extension("log")).unwrap_or_default();
                panic!("server did not start; its log:\n{log}");
            }
        };
        Self {
            child: Some(child),
            url,
            data_dir: data_dir.to_owned(),
            key: None,
            http: Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("client"),
        }
    }

    /// Writes `toml` to `dir/groundwork.toml` and starts a server on `dir/data` with it.
    pub fn start_with_config(dir: &Path, toml: &str, env: &[(&str, &str)]) -> Self {
        let path = dir.join("groundwork.toml");
        std::fs::write(&path, toml).expect("config");
        let mut all = vec![("GROUNDWORK_CONFIG", path.to_str().expect("utf-8"))];
        all.extend_from_slice(env);
        Self::start(&dir.join("data"), &all)
    }

    /// Same server, another key.
    pub fn with_key(&self, key: Option<&str>) -> Self {
        Self {
            child: None,
            url: self.url.clone(),
            data_dir: self.data_dir.clone(),
            key: key.map(str::to_owned),
            http: self.http.clone(),
        }
    }

    /// Stops the server with SIGTERM (graceful) and waits for it.
    pub fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: plain signal to a child we own.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let started = Instant::now();
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    assert!(status.success(), "server exited with {status}");
                    return;
                }
                if started.elapsed() > Duration::from_secs(60) {
                    let _ = child.kill();
                    panic!("server did not stop within 60 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Kills the server with SIGKILL (a crash: nothing is flushed or saved) and waits for it.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: plain signal to a child we own.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// Polls a workflow until `pred` holds (at most `secs`); returns it.
    pub fn wait_workflow(&self, id: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let wf: Value = ok_json(self.get(&format!("/v1/workflows/{id}")));
            if pred(&wf) {
                return wf;
            }
            assert!(
                started.elapsed() < Duration::from_secs(secs),
                "workflow {id} never reached the state: {wf}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Polls a workflow until it ends; returns it.
    pub fn wait_workflow_end(&self, id: &str) -> Value {
        self.wait_workflow(id, 600, |wf| {
            matches!(
                wf["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            )
        })
    }

    fn auth(&self, r: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
        match &self.key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    /// `GET`.
    pub fn get(&self, path: &str) -> Response {
        self.auth(self.http.get(format!("{}{path}", self.url)))
            .send()
            .expect("GET")
    }

    /// `POST` JSON.
    pub fn post(&self, path: &str, body: &Value) -> Response {
        self.auth(self.http.post(format!("{}{path}", self.url)))
            .json(body)
            .send()
            .expect("POST")
    }

    /// `POST` JSON with extra headers.
    pub fn post_with(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Response {
        let mut r = self
            .auth(self.http.post(format!("{}{path}", self.url)))
            .json(body);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send().expect("POST")
    }

    /// Any method with an optional JSON body and extra headers.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut r = self.auth(self.http.request(method, format!("{}{path}", self.url)));
        // Headers first: `json` keeps a content type already set.
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some(b) = body {
            r = r.json(b);
        }
        r.send().expect("request")
    }

    /// `POST` raw bytes with a content type.
    pub fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Response {
        self.send_raw("POST", path, content_type, body)
    }

    /// Any method with raw bytes and a content type.
    pub fn send_raw(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        self.auth(self.http.request(method, format!("{}{path}", self.url)))
            .header("content-type", content_type)
            .body(body)
            .send()
            .expect("request")
    }

    /// `DELETE`.
    pub fn delete(&self, path: &str) -> Response {
        self.auth(self.http.delete(format!("{}{path}", self.url)))
            .send()
            .expect("DELETE")
    }

    /// Multipart upload of one file with the media type its part declares.
    pub fn upload_declared(&self, kb: &str, name: &str, mime: &str, bytes: &[u8]) -> Response {
        let part = multipart::Part::bytes(bytes.to_vec())
            .file_name(name.to_owned())
            .mime_str(mime)
            .expect("mime");
        self.auth(
            self.http
                .post(format!("{}/v1/kbs/{kb}/documents", self.url)),
        )
        .multipart(multipart::Form::new().part("file", part))
        .send()
        .expect("upload")
    }

    /// Multipart upload of `(name, bytes)` files with optional metadata.
    pub fn upload(&self, kb: &str, files: &[(&str, Vec<u8>)], metadata: Option<Value>) -> Response {
        let mut form = multipart::Form::new();
        for (name, bytes) in files {
            form = form.part(
                "file",
                multipart::Part::bytes(bytes.clone()).file_name(name.to_string()),
            );
        }
        if let Some(m) = metadata {
            form = form.text("metadata", m.to_string());
        }
        self.auth(
            self.http
                .post(format!("{}/v1/kbs/{kb}/documents", self.url)),
        )
        .multipart(form)
        .send()
        .expect("upload")
    }

    /// Multipart upload of a form the caller built (extra parts such as `password`).
    pub fn upload_form(&self, kb: &str, form: multipart::Form) -> Response {
        self.auth(
            self.http
                .post(format!("{}/v1/kbs/{kb}/documents", self.url)),
        )
        .multipart(form)
        .send()
        .expect("upload")
    }

    /// Creates a knowledge base, asserting 201.
    pub fn create_kb(&self, name: &str) -> Value {
        let res = self.post("/v1/kbs", &json!({ "name": name }));
        assert_eq!(
            res.status(),
            201,
            "create kb: {}",
            res.text().unwrap_or_default()
        );
        res.json().expect("kb json")
    }

    /// Polls a job until no document is waiting or in work.
    pub fn wait_job(&self, job_id: &str) -> Value {
        let started = Instant::now();
        loop {
            let job: Value = ok_json(self.get(&format!("/v1/jobs/{job_id}")));
            if job["finished"].as_bool() == Some(true) {
                return job;
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "job {job_id} not finished: {job}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Searches, asserting 200.
    pub fn search(&self, kb: &str, query: &str, top_k: usize, mode: &str) -> Vec<Value> {
        let res = self.post(
            &format!("/v1/kbs/{kb}/search"),
            &json!({ "query": query, "top_k": top_k, "mode": mode }),
        );
        let body: Value = ok_json(res);
        body["results"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Asserts a 2xx answer and decodes its JSON.
pub fn ok_json(res: Response) -> Value {
    let status = res.status();
    let text = res.text().expect("body");
    assert!(
        status.is_success(),
        "expected success, got {status}: {text}"
    );
    serde_json::from_str(&text).expect("json body")
}

/// Asserts a problem+json answer with `status` and `code`; returns it.
pub fn problem(res: Response, status: u16, code: &str) -> Value {
    let got = res.status().as_u16();
    let url = res.url().path().to_owned();
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = res.text().expect("body");
    assert_eq!(got, status, "unexpected status from {url}: {text}");
    assert_eq!(ct, "application/problem+json");
    let body: Value = serde_json::from_str(&text).expect("problem json");
    assert_eq!(body["code"], code, "problem: {body}");
    assert_eq!(body["status"], status);
    assert!(!body["detail"].as_str().unwrap_or_default().is_empty());
    body
}
