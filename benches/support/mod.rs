//! What the benchmark binaries share: paths, percentiles, child processes, the results file.

#![allow(dead_code)] // each bench uses its own subset

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

/// The repository.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `q` quantile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// A child process killed with its whole process group when dropped (LiteLLM's workers are
/// grandchildren that would otherwise outlive it and keep serving its backlog).
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: signals a process group this program created.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a child in its own process group and waits (up to `secs`) for a stdout line
/// starting with `marker`; returns the rest of that line.
pub fn spawn_until(mut cmd: Command, marker: &str, log: &Path, secs: u64) -> (Proc, String) {
    let mut child = cmd
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(log).expect("log")))
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let wanted = marker.to_owned();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix(&wanted) {
                let _ = tx.send(rest.trim().to_owned());
            }
        }
    });
    let rest = rx
        .recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("child did not print `{marker}`; see {}", log.display()));
    (Proc(child), rest)
}

/// Updates `bench-results/<name>.json` (parts not rerun keep their last figures), stamps the
/// machine, writes and prints it.
pub fn save_results(name: &str, update: impl FnOnce(&mut Value)) {
    let path = root().join("bench-results").join(format!("{name}.json"));
    let mut results: Value = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| json!({}));
    update(&mut results);
    results["machine"] = json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_flags": cpu_flags(),
    });
    std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
    std::fs::write(&path, serde_json::to_vec_pretty(&results).expect("json")).expect("write");
    println!("{}", serde_json::to_string_pretty(&results).expect("json"));
}

/// The SIMD features of this CPU that the kernels (ours and the peers') may use; printed with
/// every benchmark, since figures compare only on the same flags.
pub fn cpu_flags() -> Vec<&'static str> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let present: std::collections::HashSet<&str> = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    let wanted = [
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vnni",
        "avx512_bf16",
        "avx_vnni",
        "amx_tile",
        "amx_int8",
        "amx_bf16",
    ];
    let flags: Vec<&'static str> = wanted.into_iter().filter(|f| present.contains(f)).collect();
    eprintln!("CPU flags: {}", flags.join(" "));
    flags
}

/// The value of `--only`, if given.
pub fn only(args: &[String]) -> Option<String> {
    args.iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned())
}
