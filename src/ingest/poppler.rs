//! The second PDF engine: poppler's `pdftotext`, which rebuilds broken cross-reference
//! tables, reads fonts pdf-extract cannot map, and opens files encrypted with an empty user
//! password.
//!
//! Runs only inside the isolated extractor process; must never be given bytes in the service
//! process.

use std::time::Duration;

use super::layout::{self, Word};
use super::tool::{self, ToolError};
use super::IngestError;

/// Most text accepted from one `pdftotext` run.
const MAX_TEXT_BYTES: u64 = 256 << 20;

/// The text of each page of the PDF at `path` (pages are separated by form feeds in
/// `pdftotext`'s output). `Ok(None)` when poppler is not installed.
pub fn pages(
    path: &str,
    password: Option<&str>,
    timeout: Duration,
) -> Result<Option<Vec<String>>, IngestError> {
    let args = arguments(&[], password, path);
    let out = match tool::run("pdftotext", &args, &[], timeout, MAX_TEXT_BYTES) {
        Ok(out) => out,
        Err(ToolError::Missing(_)) => return Ok(None),
        Err(ToolError::Timeout { seconds, .. }) => return Err(IngestError::Timeout { seconds }),
        Err(ToolError::Io(e)) => return Err(IngestError::Worker(e)),
    };
    if !out.success {
        // Exit 1: the file could not be opened; its standard error says why.
        let why = out.stderr;
        if why.contains("Incorrect password") {
            return Err(IngestError::Encrypted);
        }
        return Err(IngestError::Malformed {
            kind: "PDF",
            detail: format!(
                "poppler could not open it: {}",
                why.lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("no reason given")
            ),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut pages: Vec<String> = text.split('\u{c}').map(str::to_owned).collect();
    // Every page ends with a form feed: the piece after the last one is not a page.
    if pages.len() > 1 {
        pages.pop();
    }
    Ok(Some(pages))
}

/// The words of each of the `pages` pages with their boxes (`pdftotext -tsv`), for finding
/// tables; `None` when poppler cannot give them.
pub fn words(
    path: &str,
    password: Option<&str>,
    pages: usize,
    timeout: Duration,
) -> Option<Vec<Vec<Word>>> {
    let args = arguments(&["-tsv"], password, path);
    let out = tool::run("pdftotext", &args, &[], timeout, MAX_TEXT_BYTES).ok()?;
    out.success
        .then(|| layout::parse_tsv(&String::from_utf8_lossy(&out.stdout), pages))
}

/// `pdftotext` arguments: `extra`, UTF-8 (not quiet: on failure, standard error says why),
/// the password as owner and user password,
/// the file, output to standard output.
fn arguments<'a>(extra: &[&'a str], password: Option<&'a str>, path: &'a str) -> Vec<&'a str> {
    let mut args = extra.to_vec();
    args.extend(["-enc", "UTF-8"]);
    if let Some(pw) = password {
        args.extend(["-opw", pw, "-upw", pw]);
    }
    args.extend([path, "-"]);
    args
}

/// Whether poppler's tools are installed: `Ok` with `pdftotext`'s version line, or why not.
pub fn probe() -> Result<String, String> {
    tool::version("pdftotext", &["-v"]).map_err(|e| match e {
        ToolError::Missing(_) => "pdftotext is not installed (Debian: apt-get install \
                                  poppler-utils)"
            .to_owned(),
        other => other.to_string(),
    })
}
