//! Every document a team has, through the upload endpoint as a client sends it: Office and
//! e-book files made by their real writers (python-docx, python-pptx, openpyxl, odfpy,
//! EbookLib), scanned pages with no text layer (text drawn into images by Pillow, read back by
//! Tesseract), PDFs encrypted by qpdf, hostile archives, and tables whose header row travels
//! with every chunk of rows.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::blocking::multipart;
use serde_json::Value;

use crate::common::root;
use crate::extraction::make_pdf;
use crate::server::{ok_json, TestServer};

/// Writes the generated documents into `dir` with the test suite's Python environment.
fn make_documents(dir: &Path) {
    crate::common::python_envs();
    let made = Command::new(root().join(".venv-test/bin/python"))
        .arg(root().join("tests/py/make_documents.py"))
        .arg(dir)
        .status()
        .expect("make_documents.py");
    assert!(made.success(), "make_documents.py failed");
}

/// `pdf` encrypted by qpdf (AES-256) with `user` as the password needed to open it.
fn encrypt(dir: &Path, pdf: &[u8], user: &str, name: &str) -> Vec<u8> {
    let plain = dir.join(format!("{name}.plain.pdf"));
    let out = dir.join(name);
    std::fs::write(&plain, pdf).expect("write pdf");
    let status = Command::new("qpdf")
        .args(["--encrypt", user, "owner-secret", "256", "--"])
        .arg(&plain)
        .arg(&out)
        .status()
        .expect("qpdf (installed by tests/ui/setup.sh)");
    assert!(status.success(), "qpdf failed");
    std::fs::read(&out).expect("encrypted pdf")
}

fn documents_by_name(server: &TestServer, kb: &str) -> HashMap<String, Value> {
    let list = ok_json(server.get(&format!("/v1/kbs/{kb}/documents?limit=100")));
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| (d["name"].as_str().expect("name").to_owned(), d.clone()))
        .collect()
}

fn chunks_of(server: &TestServer, kb: &str, doc: &Value) -> Vec<Value> {
    let id = doc["id"].as_str().expect("id");
    let list = ok_json(server.get(&format!("/v1/kbs/{kb}/documents/{id}/chunks?limit=1000")));
    list["items"].as_array().expect("chunks").clone()
}

#[test]
fn office_files_scans_encrypted_pdfs_and_tables_through_the_upload_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let docs = dir.path().join("docs");
    make_documents(&docs);
    let text_pdf = make_pdf(&["The vault opens with the brass key", "Second page"]);
    let open_pdf = encrypt(dir.path(), &text_pdf, "", "owner-only.pdf");
    let locked_pdf = encrypt(
        dir.path(),
        &make_pdf(&["Locked ledger total 99"]),
        "s3cret",
        "l.pdf",
    );
    // A scan whose text layer is only a copier's stamp: the page is read by OCR all the same.
    std::fs::write(
        dir.path().join("stamp.pdf"),
        make_pdf(&["Scanned by Copier 3000"]),
    )
    .expect("stamp");
    let stamped = dir.path().join("stamped-scan.pdf");
    let status = Command::new("qpdf")
        .arg(docs.join("scanned.pdf"))
        .arg("--overlay")
        .arg(dir.path().join("stamp.pdf"))
        .args(["--to=1", "--"])
        .arg(&stamped)
        .status()
        .expect("qpdf");
    assert!(status.success(), "qpdf --overlay failed");
    let mut csv = String::from("Employee,Office,Extension\n");
    for n in 1..=200 {
        csv.push_str(&format!("Person {n:03},Floor {},{}\n", n % 9, 4000 + 3 * n));
    }
    let rtf = r"{\rtf1\ansi{\fonttbl{\f0 Arial;}}\pard The ferry to Texel leaves at 07:40.\par}";

    let server = TestServer::start(&dir.path().join("data"), &[]);
    server.create_kb("docs");
    let read = |name: &str| std::fs::read(docs.join(name)).expect("generated file");
    let mut files: Vec<(&str, Vec<u8>)> = [
        "report.docx",
        "deck.pptx",
        "inventory.xlsx",
        "notes.odt",
        "stock.ods",
        "guide.epub",
        "scanned.pdf",
        "scanned.png",
        "scanned.tiff",
        "bomb.docx",
        "traversal.docx",
        "laughs.docx",
    ]
    .into_iter()
    .map(|n| (n, read(n)))
    .collect();
    files.push(("staff.csv", csv.into_bytes()));
    files.push(("ferry.rtf", rtf.as_bytes().to_vec()));
    files.push(("owner-only.pdf", open_pdf));
    files.push(("locked.pdf", locked_pdf.clone()));
    files.push((
        "stamped-scan.pdf",
        std::fs::read(&stamped).expect("stamped"),
    ));
    let started = Instant::now();
    let receipt = ok_json(server.upload("docs", &files, None));
    assert_eq!(
        receipt["refused"].as_array().map(Vec::len),
        Some(0),
        "{receipt}"
    );
    let job = receipt["job_id"].as_str().expect("job").to_owned();
    server.wait_job(&job);
    // The same locked PDF again, with its password.
    let form = multipart::Form::new()
        .part(
            "file",
            multipart::Part::bytes(locked_pdf).file_name("locked-with-password.pdf"),
        )
        .text("password", "s3cret");
    let receipt = ok_json(server.upload_form("docs", form));
    server.wait_job(receipt["job_id"].as_str().expect("job"));
    let took = started.elapsed();
    eprintln!(
        "{} documents extracted, chunked and indexed in {took:?}",
        files.len() + 1
    );

    let docs_by_name = documents_by_name(&server, "docs");
    let doc = |name: &str| {
        docs_by_name
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    let expect_ready = [
        ("report.docx", "docx", None),
        ("deck.pptx", "pptx", Some(3)),
        ("inventory.xlsx", "calamine", Some(2)),
        ("notes.odt", "odt", None),
        ("stock.ods", "calamine", Some(1)),
        ("guide.epub", "epub", None),
        ("scanned.pdf", "tesseract", Some(2)),
        ("scanned.png", "tesseract", Some(1)),
        ("scanned.tiff", "tesseract", Some(2)),
        ("stamped-scan.pdf", "tesseract", Some(2)),
        ("staff.csv", "csv", None),
        ("ferry.rtf", "rtf", None),
        ("owner-only.pdf", "pdf-extract", Some(2)),
        ("traversal.docx", "docx", None),
        ("locked-with-password.pdf", "pdf-extract", Some(1)),
    ];
    for (name, engine, pages) in expect_ready {
        let d = doc(name);
        assert_eq!(d["status"], "ready", "{name}: {d}");
        assert!(
            d["engine"].as_str().is_some_and(|e| e.contains(engine)),
            "{name}: engine {}",
            d["engine"]
        );
        assert_eq!(d["pages"].as_u64(), pages.map(|p: u64| p), "{name}: pages");
    }
    // Scans: marked OCR'd, with Tesseract's confidence, in the document and its chunks.
    for name in [
        "scanned.pdf",
        "scanned.png",
        "scanned.tiff",
        "stamped-scan.pdf",
    ] {
        let d = doc(name);
        assert_eq!(d["ocr"], true, "{name}");
        let confidence = d["ocr_pages"][0]["confidence"]
            .as_f64()
            .expect("confidence");
        assert!(confidence > 50.0, "{name}: confidence {confidence}");
        let chunks = chunks_of(&server, "docs", d);
        assert!(
            chunks.iter().all(|c| c["ocr"] == true),
            "{name}: {chunks:?}"
        );
    }
    assert_eq!(doc("report.docx")["ocr"], false);
    // Encrypted: empty user password opens; a real one is `encrypted` until it is given.
    let locked = doc("locked.pdf");
    assert_eq!(locked["status"], "failed");
    assert_eq!(locked["error_code"], "encrypted", "{locked}");
    // Hostile archives end typed (the traversal archive reads as a normal document, above).
    let bomb = doc("bomb.docx");
    assert_eq!(bomb["status"], "failed");
    assert_eq!(bomb["error_code"], "malformed");
    assert!(
        bomb["error"]
            .as_str()
            .unwrap_or_default()
            .contains("ZIP bomb"),
        "{bomb}"
    );
    let laughs = doc("laughs.docx");
    assert!(
        laughs["status"] == "ready" || laughs["error_code"] == "no_text",
        "{laughs}"
    );
    let laugh_chunks = if laughs["status"] == "ready" {
        chunks_of(&server, "docs", laughs)
    } else {
        Vec::new()
    };
    assert!(laugh_chunks
        .iter()
        .all(|c| !c["text"].as_str().unwrap_or_default().contains("lollol")));

    // Headings and pages as citations need them.
    let deck = chunks_of(&server, "docs", doc("deck.pptx"));
    let notes = deck
        .iter()
        .find(|c| {
            c["text"]
                .as_str()
                .unwrap_or_default()
                .contains("crash test")
        })
        .expect("speaker notes indexed");
    assert_eq!(notes["page_start"], 2, "{notes}");
    assert_eq!(
        notes["heading_path"][0], "Slide 2: Ingest pipeline",
        "{notes}"
    );
    let report = chunks_of(&server, "docs", doc("report.docx"));
    let figures = report
        .iter()
        .find(|c| c["text"].as_str().unwrap_or_default().contains("South"))
        .expect("table row");
    let path: Vec<&str> = figures["heading_path"]
        .as_array()
        .expect("path")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(path.ends_with(&["Revenue", "Regional figures"]), "{path:?}");
    let epub = chunks_of(&server, "docs", doc("guide.epub"));
    let rowan = epub
        .iter()
        .find(|c| c["text"].as_str().unwrap_or_default().contains("rowan"))
        .expect("chapter text");
    assert_eq!(
        rowan["heading_path"].as_array().and_then(|p| p.last()),
        Some(&Value::from("Trees"))
    );

    // Search finds what scans and Office files say.
    let top = |query: &str| {
        let hits = server.search("docs", query, 3, "hybrid");
        hits.into_iter()
            .next()
            .unwrap_or_else(|| panic!("no hit for {query:?}"))
    };
    let hit = top("total amount due on invoice 4711");
    assert!(
        hit["document_name"]
            .as_str()
            .unwrap_or_default()
            .starts_with("scanned"),
        "{hit}"
    );
    assert_eq!(hit["ocr"], true);
    assert_eq!(
        top("ferry to Texel departure")["document_name"],
        "ferry.rtf"
    );
    assert_eq!(top("vault brass key")["document_name"], "owner-only.pdf");
    assert_eq!(
        top("Oslo data centre approval")["document_name"],
        "notes.odt"
    );

    // A cell of a 200-row table: the chunk that holds the row also holds the header.
    for (query, doc_name, row, value, header) in [
        (
            "Widget-137 quantity",
            "inventory.xlsx",
            "Widget-137",
            "6069",
            "| Item | Warehouse | Quantity |",
        ),
        (
            "Person 150 extension",
            "staff.csv",
            "Person 150",
            "4450",
            "| Employee | Office | Extension |",
        ),
    ] {
        let hits = server.search("docs", query, 5, "hybrid");
        let hit = hits
            .iter()
            .find(|h| h["text"].as_str().unwrap_or_default().contains(row))
            .unwrap_or_else(|| panic!("{query:?}: no chunk with {row} in {hits:?}"));
        assert_eq!(hit["document_name"], doc_name);
        let text = hit["text"].as_str().unwrap_or_default();
        let line = text.lines().find(|l| l.contains(row)).expect("row line");
        assert!(line.contains(value), "{line}");
        let shown = format!(
            "{}\n{text}",
            hit["table_header"].as_str().unwrap_or_default()
        );
        assert!(
            shown.contains(header),
            "{query:?}: the header is missing from {hit}"
        );
        // Rows stay whole: every line of a table chunk is one complete row.
        assert!(
            text.lines().all(|l| l.starts_with('|') && l.ends_with('|')),
            "{text}"
        );
    }
    let sheets = chunks_of(&server, "docs", doc("inventory.xlsx"));
    assert!(
        sheets.iter().any(|c| c["text"]
            .as_str()
            .unwrap_or_default()
            .contains("| Counted on | 2026-03-14 |")),
        "a date cell reads as a date"
    );
    let rows = chunks_of(&server, "docs", doc("staff.csv"));
    assert!(rows.len() > 2, "a 200-row table spans chunks");
    for c in &rows[1..] {
        assert_eq!(
            c["table_header"], "| Employee | Office | Extension |\n| --- | --- | --- |",
            "{c}"
        );
    }
    assert!(took < Duration::from_secs(240), "took {took:?}");
    server.stop();
}
