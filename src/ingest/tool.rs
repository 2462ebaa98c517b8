//! Running one external program (poppler's `pdftotext` and `pdftoppm`, `tesseract`) with a
//! wall-clock bound and capped output, and finding out whether it is installed.
//!
//! Called only inside the isolated extractor process, whose resource limits the program
//! inherits; must never be used from the service process on document bytes.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a finished program left behind.
#[derive(Debug)]
pub struct Output {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Standard output, at most the cap given.
    pub stdout: Vec<u8>,
    /// Standard error, at most 64 KiB.
    pub stderr: String,
}

/// Why a program gave no [`Output`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// Not installed (or not executable).
    #[error("{0} is not installed")]
    Missing(String),
    /// Ran past its bound and was killed.
    #[error("{program} did not finish within {seconds} s")]
    Timeout {
        /// The program.
        program: String,
        /// The bound.
        seconds: u64,
    },
    /// Could not be started or waited for.
    #[error("{0}")]
    Io(String),
}

/// Runs `program args…` with `env`, killing it after `timeout`; keeps at most `max_stdout`
/// bytes of its standard output.
pub fn run(
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
    max_stdout: u64,
) -> Result<Output, ToolError> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
            ToolError::Missing(program.to_owned())
        }
        _ => ToolError::Io(format!("{program}: {e}")),
    })?;
    let started = Instant::now();
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| ToolError::Io("no stdout".into()))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| ToolError::Io("no stderr".into()))?;
    std::thread::scope(|scope| {
        let out = scope.spawn(move || {
            let mut buf = Vec::new();
            let _ = (&mut stdout).take(max_stdout).read_to_end(&mut buf);
            // Drain the rest so the program is never blocked on a full pipe.
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
            buf
        });
        let err = scope.spawn(move || {
            let mut buf = Vec::new();
            let _ = (&mut stderr).take(64 << 10).read_to_end(&mut buf);
            let _ = std::io::copy(&mut stderr, &mut std::io::sink());
            buf
        });
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if started.elapsed() >= timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(ToolError::Timeout {
                        program: program.to_owned(),
                        seconds: timeout.as_secs(),
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => break Err(ToolError::Io(format!("waiting for {program}: {e}"))),
            }
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        status.map(|status| Output {
            success: status.success(),
            stdout,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    })
}

/// The first line `program --version`-like `args` print (on stdout or stderr), or why the
/// program cannot run.
pub fn version(program: &str, args: &[&str]) -> Result<String, ToolError> {
    let out = run(program, args, &[], Duration::from_secs(10), 64 << 10)?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &out.stderr;
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

/// A scratch directory removed (with its files) when dropped.
pub struct Scratch {
    path: std::path::PathBuf,
}

impl Scratch {
    /// A new empty directory under the system's temporary directory.
    pub fn new() -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "groundwork-extract-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&path)?;
        Ok(Self { path })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path for `name` inside it, as a string for program arguments.
    pub fn file(&self, name: &str) -> String {
        self.path.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_named() {
        let err = run("/nonexistent/tool", &[], &[], Duration::from_secs(1), 10).expect_err("x");
        assert_eq!(err, ToolError::Missing("/nonexistent/tool".into()));
    }

    #[test]
    fn output_is_capped_and_slow_programs_are_killed() {
        let out = run(
            "/bin/sh",
            &["-c", "yes | head -c 100000"],
            &[],
            Duration::from_secs(5),
            10,
        )
        .expect("runs");
        assert!(out.success);
        assert_eq!(out.stdout.len(), 10);
        let started = Instant::now();
        let err = run("/bin/sleep", &["5"], &[], Duration::from_millis(200), 10).expect_err("slow");
        assert!(matches!(err, ToolError::Timeout { .. }));
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
