//! Optical character recognition with Tesseract: image uploads (PNG, JPEG, TIFF) and PDF pages
//! without a text layer, rendered by poppler's `pdftoppm`.
//!
//! Runs only inside the isolated extractor process (see [`super::isolate`]); each page has its
//! own time bound, and the pages of a document are recognised on up to two threads. Must never
//! be called from the service process on document bytes: [`probe`] (is OCR available, and why
//! not) is the one function the service uses.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::tool::{self, Scratch, ToolError};

/// OCR settings, from `[ingest.ocr]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OcrSettings {
    /// Recognise pages without text (and image uploads). Off: such pages stay empty, and an
    /// image upload is refused.
    pub enabled: bool,
    /// Tesseract languages, `+`-joined (`eng`, `eng+deu`); each needs its language data
    /// package (`tesseract-ocr-deu`…).
    pub languages: String,
    /// Resolution pages are rendered at, dots per inch.
    pub dpi: u32,
    /// Seconds one page may take to render and recognise.
    pub page_timeout_secs: u64,
    /// Most pages of one document recognised; later pages stay empty, with a warning.
    pub max_pages: usize,
    /// Parallel recognitions per document (Tesseract itself runs single-threaded).
    pub threads: usize,
}

impl Default for OcrSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            languages: "eng".into(),
            dpi: 300,
            page_timeout_secs: 60,
            max_pages: 500,
            threads: 2,
        }
    }
}

impl OcrSettings {
    /// Wall-clock time OCR may add to one document's extraction.
    pub fn document_budget(&self) -> Duration {
        if !self.enabled {
            return Duration::ZERO;
        }
        let waves = self.max_pages.div_ceil(self.threads.max(1)) as u64;
        Duration::from_secs(waves.saturating_mul(self.page_timeout_secs))
    }
}

/// Whether OCR can run with `settings`: `Ok` with Tesseract's version, or why not (not
/// installed, a language without its data, poppler's renderer missing, switched off).
pub fn probe(settings: &OcrSettings) -> Result<String, String> {
    if !settings.enabled {
        return Err("switched off (ingest.ocr.enabled = false)".into());
    }
    let version = tool::version("tesseract", &["--version"]).map_err(|e| install_hint(&e))?;
    let langs = tool::run(
        "tesseract",
        &["--list-langs"],
        &[],
        Duration::from_secs(10),
        1 << 20,
    )
    .map_err(|e| install_hint(&e))?;
    let listed = String::from_utf8_lossy(&langs.stdout).into_owned() + &langs.stderr;
    let have: Vec<&str> = listed.lines().skip(1).map(str::trim).collect();
    for lang in settings.languages.split('+') {
        if !have.contains(&lang) {
            return Err(format!(
                "Tesseract has no data for language `{lang}` (install tesseract-ocr-{lang}); \
                 installed: {}",
                have.join(", ")
            ));
        }
    }
    tool::version("pdftoppm", &["-v"]).map_err(|e| install_hint(&e))?;
    Ok(version)
}

fn install_hint(e: &ToolError) -> String {
    match e {
        ToolError::Missing(p) => format!(
            "{p} is not installed (Debian: apt-get install tesseract-ocr tesseract-ocr-eng \
             poppler-utils; `./tests/run.sh` and `scripts/setup.sh` do it)"
        ),
        other => other.to_string(),
    }
}

/// The text Tesseract read from one page, and its mean word confidence (0–100).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageText {
    /// Lines in reading order, paragraphs separated by blank lines.
    pub text: String,
    /// Mean confidence of the words read, 0–100.
    pub confidence: f32,
    /// Words read.
    pub words: usize,
}

/// Reads Tesseract's TSV output into one [`PageText`] per page (`page_num`), in order.
pub fn parse_tsv(tsv: &str) -> Vec<PageText> {
    let mut pages: Vec<(u32, PageText, f64)> = Vec::new();
    let mut last: Option<(u32, u32, u32, u32)> = None;
    for line in tsv.lines().skip(1) {
        let cols: Vec<&str> = line.splitn(12, '\t').collect();
        if cols.len() < 12 || cols[0] != "5" {
            continue;
        }
        let num = |i: usize| cols[i].parse::<u32>().unwrap_or(0);
        let (page, block, par, line_no) = (num(1), num(2), num(3), num(4));
        let word = cols[11].trim();
        let conf: f64 = cols[10].parse().unwrap_or(-1.0);
        if word.is_empty() || conf < 0.0 {
            continue;
        }
        if pages.last().is_none_or(|(p, _, _)| *p != page) {
            pages.push((
                page,
                PageText {
                    text: String::new(),
                    confidence: 0.0,
                    words: 0,
                },
                0.0,
            ));
            last = None;
        }
        let Some((_, out, sum)) = pages.last_mut() else {
            continue;
        };
        match last {
            Some((_, b, p, _)) if (b, p) != (block, par) => out.text.push_str("\n\n"),
            Some((_, _, _, l)) if l != line_no => out.text.push('\n'),
            Some(_) => out.text.push(' '),
            None => {}
        }
        out.text.push_str(word);
        out.words += 1;
        *sum += conf;
        last = Some((page, block, par, line_no));
    }
    pages
        .into_iter()
        .map(|(_, mut p, sum)| {
            p.confidence = if p.words == 0 {
                0.0
            } else {
                ((sum / p.words as f64) * 10.0).round() as f32 / 10.0
            };
            p
        })
        .collect()
}

/// Recognises an image upload (every page of a multi-page TIFF, within the document's OCR
/// budget; one page within the page bound).
pub fn image(
    path: &str,
    settings: &OcrSettings,
    multi_page: bool,
) -> Result<Vec<PageText>, ToolError> {
    let bound = if multi_page {
        settings.document_budget()
    } else {
        Duration::from_secs(settings.page_timeout_secs)
    };
    recognise(path, settings, None, bound)
}

/// Runs Tesseract on one image file. `dpi`: the resolution a page was rendered at (an upload's
/// own resolution, or Tesseract's estimate, is used otherwise).
fn recognise(
    path: &str,
    settings: &OcrSettings,
    dpi: Option<u32>,
    bound: Duration,
) -> Result<Vec<PageText>, ToolError> {
    let dpi = dpi.map(|d| d.to_string());
    let mut args = vec![path, "stdout", "-l", &settings.languages];
    if let Some(dpi) = &dpi {
        args.extend(["--dpi", dpi]);
    }
    args.push("tsv");
    let out = tool::run(
        "tesseract",
        &args,
        &[("OMP_THREAD_LIMIT", "1")],
        bound,
        64 << 20,
    )?;
    if !out.success {
        return Err(ToolError::Io(format!(
            "tesseract failed: {}",
            out.stderr.lines().last().unwrap_or("no message")
        )));
    }
    Ok(parse_tsv(&String::from_utf8_lossy(&out.stdout)))
}

/// One page's OCR result, with its position in the request.
type PageResult = (usize, u32, Result<PageText, ToolError>);

/// Renders and recognises the given 1-based `pages` of the PDF at `pdf`, on up to
/// `settings.threads` threads. One result per page, in the order given.
pub fn pdf_pages(
    pdf: &str,
    password: Option<&str>,
    pages: &[u32],
    settings: &OcrSettings,
    scratch: &Scratch,
) -> Vec<(u32, Result<PageText, ToolError>)> {
    let results: Mutex<Vec<PageResult>> = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..settings.threads.clamp(1, pages.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&page) = pages.get(i) else { break };
                let result = pdf_page(pdf, password, page, settings, scratch);
                results
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((i, page, result));
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|(i, _, _)| *i);
    results.into_iter().map(|(_, p, r)| (p, r)).collect()
}

fn pdf_page(
    pdf: &str,
    password: Option<&str>,
    page: u32,
    settings: &OcrSettings,
    scratch: &Scratch,
) -> Result<PageText, ToolError> {
    let n = page.to_string();
    let dpi = settings.dpi.to_string();
    let prefix = scratch.file(&format!("page-{page}"));
    // Uncompressed greyscale (PGM): seven times faster to write than PNG, and read back here
    // to skip blank pages without running Tesseract on them.
    let mut args = vec!["-f", &n, "-l", &n, "-r", &dpi, "-gray", "-singlefile"];
    if let Some(pw) = password {
        args.extend(["-upw", pw]);
    }
    args.extend([pdf, &prefix]);
    let render = tool::run(
        "pdftoppm",
        &args,
        &[],
        Duration::from_secs(settings.page_timeout_secs),
        1 << 16,
    )?;
    let image_path = format!("{prefix}.pgm");
    let empty = PageText {
        text: String::new(),
        confidence: 0.0,
        words: 0,
    };
    if !render.success {
        let _ = std::fs::remove_file(&image_path);
        return Err(ToolError::Io(format!(
            "pdftoppm could not render the page: {}",
            render.stderr.lines().last().unwrap_or("no message")
        )));
    }
    let blank = std::fs::read(&image_path)
        .map(|pgm| is_blank(&pgm))
        .unwrap_or(false);
    let result = if blank {
        Ok(vec![])
    } else {
        recognise(
            &image_path,
            settings,
            Some(settings.dpi),
            Duration::from_secs(settings.page_timeout_secs),
        )
    };
    let _ = std::fs::remove_file(&image_path);
    Ok(result?.into_iter().next().unwrap_or(empty))
}

/// Whether a binary PGM (`P5`) image is blank: fewer than one pixel in 20,000 (and fewer than
/// 50) differs clearly from the most common grey. Unreadable input is not blank.
pub fn is_blank(pgm: &[u8]) -> bool {
    let Some((width, height, maxval, data)) = pgm_parts(pgm) else {
        return false;
    };
    if maxval > 255 || data.len() < width * height {
        return false;
    }
    let pixels = &data[..width * height];
    let mut histogram = [0usize; 256];
    for &p in pixels {
        histogram[p as usize] += 1;
    }
    let mode = (0..256).max_by_key(|&v| histogram[v]).unwrap_or(255) as i32;
    let far: usize = (0..256)
        .filter(|&v| (v as i32 - mode).abs() > 64)
        .map(|v| histogram[v])
        .sum();
    far < (width * height / 20_000).max(50)
}

/// Width, height, maximum value and pixel bytes of a binary PGM.
fn pgm_parts(pgm: &[u8]) -> Option<(usize, usize, usize, &[u8])> {
    if !pgm.starts_with(b"P5") {
        return None;
    }
    let mut fields = Vec::with_capacity(3);
    let mut i = 2;
    while fields.len() < 3 {
        while i < pgm.len() && (pgm[i].is_ascii_whitespace() || pgm[i] == b'#') {
            if pgm[i] == b'#' {
                while i < pgm.len() && pgm[i] != b'\n' {
                    i += 1;
                }
            }
            i += 1;
        }
        let start = i;
        while i < pgm.len() && pgm[i].is_ascii_digit() {
            i += 1;
        }
        fields.push(
            std::str::from_utf8(&pgm[start..i])
                .ok()?
                .parse::<usize>()
                .ok()?,
        );
    }
    // One whitespace byte separates the header from the pixels.
    Some((fields[0], fields[1], fields[2], pgm.get(i + 1..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_becomes_lines_paragraphs_and_a_mean_confidence() {
        let tsv = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n\
            1\t1\t0\t0\t0\t0\t0\t0\t100\t100\t-1\t\n\
            5\t1\t1\t1\t1\t1\t0\t0\t1\t1\t90\tHello\n\
            5\t1\t1\t1\t1\t2\t0\t0\t1\t1\t80\tworld\n\
            5\t1\t1\t1\t2\t1\t0\t0\t1\t1\t70\tagain\n\
            5\t1\t2\t1\t1\t1\t0\t0\t1\t1\t60\tNext\n\
            5\t1\t2\t1\t1\t2\t0\t0\t1\t1\t-1\t \n\
            5\t2\t1\t1\t1\t1\t0\t0\t1\t1\t50\tTwo\n";
        let pages = parse_tsv(tsv);
        assert_eq!(pages.len(), 2);
        assert_eq!(pages[0].text, "Hello world\nagain\n\nNext");
        assert_eq!(pages[0].words, 4);
        assert_eq!(pages[0].confidence, 75.0);
        assert_eq!(pages[1].text, "Two");
    }

    #[test]
    fn blank_pages_are_recognised_without_ocr() {
        let page = |ink: usize| {
            let mut pgm = b"P5\n# rendered\n200 100\n255\n".to_vec();
            let mut pixels = vec![250u8; 200 * 100];
            for p in pixels.iter_mut().take(ink) {
                *p = 10;
            }
            pgm.extend(pixels);
            pgm
        };
        assert!(is_blank(&page(0)));
        assert!(is_blank(&page(20)));
        assert!(!is_blank(&page(400)));
        assert!(!is_blank(b"P5\n2 2\n255\n"));
        assert!(!is_blank(b"not an image"));
    }

    #[test]
    fn the_budget_covers_every_page_in_waves() {
        let s = OcrSettings {
            max_pages: 5,
            threads: 2,
            page_timeout_secs: 10,
            ..OcrSettings::default()
        };
        assert_eq!(s.document_budget(), Duration::from_secs(30));
        let off = OcrSettings {
            enabled: false,
            ..s
        };
        assert_eq!(off.document_budget(), Duration::ZERO);
    }
}
