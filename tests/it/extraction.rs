//! Extraction through the real isolated worker (`groundwork extract-worker`): generated PDFs,
//! hostile PDFs, and every PDF of the team's shared corpus compared with poppler, run here.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use groundwork::ingest::isolate::Isolation;
use groundwork::ingest::{extract, ExtractOptions, IngestError, MediaType};

use crate::common;

fn options(timeout: Duration) -> ExtractOptions {
    let mut isolation = Isolation::with_program(common::bin());
    isolation.timeout = timeout;
    isolation.memory_limit = 1 << 30;
    ExtractOptions {
        isolation,
        password: None,
    }
}

/// A minimal valid PDF with one Helvetica text line per page.
pub fn make_pdf(pages: &[&str]) -> Vec<u8> {
    let streams: Vec<String> = pages
        .iter()
        .map(|text| format!("BT /F1 12 Tf 72 712 Td ({text}) Tj ET"))
        .collect();
    pdf_of_streams(&streams)
}

/// A one-page PDF with each `(x, y, text)` drawn where it says (Helvetica 10 pt).
fn make_positioned_pdf(items: &[(u32, u32, String)]) -> Vec<u8> {
    let stream: String = items
        .iter()
        .map(|(x, y, t)| format!("BT /F1 10 Tf {x} {y} Td ({t}) Tj ET\n"))
        .collect();
    pdf_of_streams(&[stream])
}

/// A valid PDF with one page per content stream (Helvetica as font `F1`).
fn pdf_of_streams(streams: &[String]) -> Vec<u8> {
    let mut objects: Vec<String> = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".into(),
        String::new(), // pages, filled below
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".into(),
    ];
    let mut kids = Vec::new();
    for stream in streams {
        let page_id = objects.len() + 1;
        let content_id = page_id + 1;
        kids.push(format!("{page_id} 0 R"));
        objects.push(format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] \
             /Resources << /Font << /F1 3 0 R >> >> /Contents {content_id} 0 R >>"
        ));
        objects.push(format!(
            "<< /Length {} >>\nstream\n{stream}\nendstream",
            stream.len()
        ));
    }
    objects[1] = format!(
        "<< /Type /Pages /Kids [{}] /Count {} >>",
        kids.join(" "),
        streams.len()
    );
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n{body}\nendobj\n", i + 1).bytes());
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).bytes());
    for off in offsets {
        out.extend(format!("{off:010} 00000 n \n").bytes());
    }
    out.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .bytes(),
    );
    out
}

/// A table drawn as positioned text (no table structure in the file) is recognised from the
/// words' positions: its rows become pipe rows with the first as header.
#[test]
fn a_table_in_a_pdf_is_recognised_by_its_columns() {
    let mut items = vec![(72, 740, "Depot stock levels".to_owned())];
    let rows = [
        ("Depot", "Pallets", "Manager"),
        ("Leeds", "140", "Ann Cole"),
        ("Hull", "95", "Raj Patel"),
        ("York", "61", "Li Wei"),
        ("Bath", "230", "Tom Hardy"),
    ];
    for (i, (a, b, c)) in rows.iter().enumerate() {
        let y = 700 - 14 * i as u32;
        items.extend([
            (72, y, a.to_string()),
            (220, y, b.to_string()),
            (320, y, c.to_string()),
        ]);
    }
    items.push((72, 600, "Counts are taken every Monday morning.".to_owned()));
    let pdf = make_positioned_pdf(&items);
    let doc = extract(&pdf, Some("stock.pdf"), &options(Duration::from_secs(30))).expect("pdf");
    assert_eq!(doc.tables.len(), 1, "{:?}", doc.text);
    let t = &doc.tables[0];
    assert_eq!(
        &doc.text[t.start..t.body],
        "| Depot | Pallets | Manager |\n| --- | --- | --- |\n"
    );
    assert!(
        doc.text[t.body..t.end].contains("| Hull | 95 | Raj Patel |"),
        "{}",
        doc.text
    );
    assert!(doc.text.starts_with("Depot stock levels"), "{}", doc.text);
    assert!(
        doc.text.ends_with("Counts are taken every Monday morning."),
        "{}",
        doc.text
    );
}

#[test]
fn generated_pdf_yields_text_per_page() {
    let pdf = make_pdf(&["Groundwork page one", "Second page about indexes"]);
    let doc = extract(&pdf, Some("x.bin"), &options(Duration::from_secs(30))).expect("extract");
    assert_eq!(doc.media_type, MediaType::Pdf);
    assert_eq!(doc.page_count(), 2);
    let p2 = doc.page_starts[1];
    assert!(doc.text[..p2].contains("page one"), "{:?}", doc.text);
    assert!(doc.text[p2..].contains("Second page"), "{:?}", doc.text);
    assert_eq!(doc.page_at(p2), Some(2));
}

#[test]
fn hostile_pdfs_end_in_typed_errors_quickly() {
    let valid = make_pdf(&["some text"]);
    let mut cyclic = make_pdf(&["loop"]);
    // Make the page tree its own child: naive walkers recurse forever.
    let needle = b"/Kids [4 0 R]";
    let at = cyclic
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("kids");
    cyclic[at..at + needle.len()].copy_from_slice(b"/Kids [2 0 R]");
    let mut noise = b"%PDF-1.7\n".to_vec();
    let mut x: u32 = 12345;
    noise.extend((0..50_000).map(|_| {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        (x >> 16) as u8
    }));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", valid[..valid.len() / 2].to_vec()),
        ("cyclic page tree", cyclic),
        ("random bytes after header", noise),
        ("header only", b"%PDF-1.4\n".to_vec()),
    ];
    let opts = options(Duration::from_secs(10));
    for (name, bytes) in cases {
        let started = Instant::now();
        let result = extract(&bytes, Some("hostile.pdf"), &opts);
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{name} took too long"
        );
        match result {
            Ok(doc) => assert!(!doc.text.trim().is_empty(), "{name}: ok means text"),
            Err(e) => assert!(!matches!(e, IngestError::Worker(_)), "{name}: {e}"),
        }
    }
}

#[test]
fn invalid_utf8_text_is_read_with_a_warning() {
    let doc = extract(
        b"caf\xE9 au lait \xFF",
        Some("note.txt"),
        &options(Duration::from_secs(5)),
    )
    .expect("text");
    assert!(doc.text.starts_with("caf"));
    assert_eq!(doc.warnings.len(), 1);
    let err = extract(
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
        Some("photo.pdf"),
        &options(Duration::from_secs(5)),
    )
    .expect_err("png");
    assert_eq!(err.code(), "unsupported_media_type");
}

#[test]
fn encrypted_pdf_needs_its_password() {
    let Some(dir) = common::shared("pdfs/real/pdfplumber") else {
        return;
    };
    let bytes = std::fs::read(dir.join("password-example.pdf")).expect("sample");
    let mut opts = options(Duration::from_secs(30));
    assert_eq!(
        extract(&bytes, None, &opts).err(),
        Some(IngestError::Encrypted)
    );
    opts.password = Some("wrong".into());
    assert_eq!(
        extract(&bytes, None, &opts).err(),
        Some(IngestError::Encrypted)
    );
    opts.password = Some("test".into());
    let doc = extract(&bytes, None, &opts).expect("decrypted");
    assert!(!doc.text.trim().is_empty());
}

/// Non-space characters `pdftotext` (poppler) reads from `path`; 0 when it cannot open it.
fn poppler_chars(path: &std::path::Path) -> usize {
    let out = std::process::Command::new("pdftotext")
        .args(["-enc", "UTF-8", "-q"])
        .arg(path)
        .arg("-")
        .output()
        .expect("pdftotext (poppler-utils, installed by tests/ui/setup.sh)");
    String::from_utf8_lossy(&out.stdout)
        .chars()
        .filter(|c| !c.is_whitespace())
        .count()
}

/// One shared PDF: its path, non-space characters read (or the error), poppler's count,
/// whether it has an `/Encrypt` entry, how long extraction took.
type Outcome = (String, Result<usize, IngestError>, usize, bool, Duration);

/// Every shared PDF ends in text or a typed error within its time bound, and Groundwork reads
/// what poppler reads: no file where poppler finds >= 20 non-space characters and Groundwork
/// under half of them; no file with an `/Encrypt` entry ends `malformed`. The per-file report
/// is written to target/ for the record.
#[test]
fn shared_pdfs_read_what_poppler_reads() {
    let Some(root) = common::shared("pdfs") else {
        return;
    };
    let mut files: Vec<std::path::PathBuf> = walkdir::WalkDir::new(&root)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.into_path())
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("pdf")))
        .collect();
    files.sort();
    let timeout = Duration::from_secs(20);
    let mut opts = options(timeout);
    // One file at a time and one OCR page at a time: one core, so the tests that run beside
    // this one (a live server under schemathesis, chat turns) keep the other.
    opts.isolation.pdf.ocr.threads = 1;
    let results: Vec<Outcome> = files
        .iter()
        .map(|path| {
            let rel = path
                .strip_prefix(&root)
                .unwrap_or(path)
                .display()
                .to_string();
            let bytes = std::fs::read(path).expect("read pdf");
            let encrypted = bytes.windows(8).any(|w| w == b"/Encrypt");
            let started = Instant::now();
            let r = extract(&bytes, Some(&rel), &opts)
                .map(|d| d.text.chars().filter(|c| !c.is_whitespace()).count());
            let took = started.elapsed();
            (rel, r, poppler_chars(path), encrypted, took)
        })
        .collect();
    let mut report = String::from(
        "file	groundwork	poppler
",
    );
    let mut lost = Vec::new();
    let mut encrypted_malformed = Vec::new();
    let mut outcomes: HashMap<&str, usize> = HashMap::new();
    for (rel, result, poppler, encrypted, took) in &results {
        assert!(
            *took < opts.isolation.deadline(MediaType::Pdf) + Duration::from_secs(5),
            "{rel} overran its bound"
        );
        if let Err(IngestError::Worker(e)) = result {
            panic!("{rel}: the extractor could not run: {e}");
        }
        let ours = *result.as_ref().unwrap_or(&0);
        if *poppler >= 20 && ours * 2 < *poppler {
            lost.push(format!("{rel}: poppler {poppler}, groundwork {ours}"));
        }
        if *encrypted && matches!(result, Err(IngestError::Malformed { .. })) {
            encrypted_malformed.push(rel.clone());
        }
        *outcomes
            .entry(result.as_ref().map_or_else(|e| e.code(), |_| "ok"))
            .or_default() += 1;
        let shown = match result {
            Ok(n) => n.to_string(),
            Err(e) => format!("error:{}", e.code()),
        };
        report.push_str(&format!("{rel}\t{shown}\t{poppler}\n"));
    }
    let summary = format!(
        "{} PDFs: {outcomes:?}; poppler >= 20 non-space characters and Groundwork < 50 %: {}; \
         encrypted and malformed: {}",
        results.len(),
        lost.len(),
        encrypted_malformed.len()
    );
    eprintln!("{summary}");
    let out = common::root()
        .join("target")
        .join("pdf-baseline-report.tsv");
    let _ = std::fs::write(&out, format!("# {summary}\n{report}"));
    assert!(lost.is_empty(), "{summary}: {lost:#?}");
    assert!(
        encrypted_malformed.is_empty(),
        "{summary}: {encrypted_malformed:?}"
    );
}
