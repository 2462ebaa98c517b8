//! Bounded child processes: [`supervise`] runs one with a wall-clock bound (its whole process
//! group killed past it) and capped output; [`run`] is that for an external program
//! (poppler's `pdftotext` and `pdftoppm`, `tesseract`), and [`version`] finds out whether one
//! is installed.
//!
//! The service supervises only the extractor worker with it; external programs run only inside
//! that worker, whose resource limits they inherit: never on document bytes in the service.

use std::io::{Read, Write};
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

/// A supervised child that ended on its own: its status and what it wrote.
#[derive(Debug)]
pub struct Finished {
    /// How it ended.
    pub status: std::process::ExitStatus,
    /// Standard output, at most the cap given.
    pub stdout: Vec<u8>,
    /// Standard error, at most 64 KiB.
    pub stderr: Vec<u8>,
}

/// Runs `command` in a process group of its own, writes `input` (the slices in order) to its
/// standard input, keeps at most `max_stdout` bytes of its output and 64 KiB of its errors
/// (draining the rest, so it never blocks on a full pipe), and kills the whole group — the
/// programs it started included — when `timeout` passes. The one place child processes are
/// bounded: the extractor worker (from the service) and the programs the worker runs.
pub fn supervise(
    command: &mut Command,
    input: &[&[u8]],
    timeout: Duration,
    max_stdout: u64,
) -> Result<Finished, ToolError> {
    let program = command.get_program().to_string_lossy().into_owned();
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    let mut child = command
        .stdin(if input.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                ToolError::Missing(program.clone())
            }
            _ => ToolError::Io(format!("{program}: {e}")),
        })?;
    let started = Instant::now();
    let stdin = child.stdin.take();
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| ToolError::Io("no stdout".into()))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| ToolError::Io("no stderr".into()))?;
    std::thread::scope(|scope| {
        if let Some(mut stdin) = stdin {
            // A child that dies early closes its stdin: the write error is expected.
            scope.spawn(move || {
                for part in input {
                    if stdin.write_all(part).is_err() {
                        break;
                    }
                }
            });
        }
        let out = scope.spawn(move || capped(&mut stdout, max_stdout));
        let err = scope.spawn(move || capped(&mut stderr, 64 << 10));
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if started.elapsed() >= timeout => {
                    kill_group(&mut child);
                    break Err(ToolError::Timeout {
                        program: program.clone(),
                        seconds: timeout.as_secs(),
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => break Err(ToolError::Io(format!("waiting for {program}: {e}"))),
            }
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        status.map(|status| Finished {
            status,
            stdout,
            stderr,
        })
    })
}

/// At most `max` bytes of `r`; the rest is read and dropped.
fn capped(r: &mut impl Read, max: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = r.take(max).read_to_end(&mut buf);
    let _ = std::io::copy(r, &mut std::io::sink());
    buf
}

fn kill_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    // SAFETY: kill(2) with a negative pid signals the process group the child leads (made by
    // `process_group(0)` at spawn); it touches no memory of ours.
    unsafe {
        libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `program args…` with `env` under [`supervise`], no input.
pub fn run(
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
    max_stdout: u64,
) -> Result<Output, ToolError> {
    let mut command = Command::new(program);
    command.args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    let done = supervise(&mut command, &[], timeout, max_stdout)?;
    Ok(Output {
        success: done.status.success(),
        stdout: done.stdout,
        stderr: String::from_utf8_lossy(&done.stderr).into_owned(),
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
    fn a_timeout_kills_the_programs_the_child_started() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
        let mut command = Command::new("/bin/sh");
        command.args(["-c", &script]);
        let err = supervise(&mut command, &[], Duration::from_millis(300), 10).expect_err("slow");
        assert!(matches!(err, ToolError::Timeout { .. }));
        let pid = std::fs::read_to_string(&pid_file).expect("pid");
        std::thread::sleep(Duration::from_millis(100));
        // Gone, or a zombie waiting for its new parent to reap it: not running.
        let state = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
            .map(|s| s.rsplit(')').next().unwrap_or("").trim().chars().next())
            .unwrap_or(None);
        assert!(
            matches!(state, None | Some('Z') | Some('X')),
            "grandchild state {state:?}"
        );
    }

    #[test]
    fn input_reaches_the_child_in_order() {
        let mut command = Command::new("/bin/cat");
        let done = supervise(
            &mut command,
            &[b"ab", b"", b"cd"],
            Duration::from_secs(5),
            100,
        )
        .expect("cat");
        assert_eq!(done.stdout, b"abcd");
    }

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
