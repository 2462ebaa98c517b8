//! `groundwork eval` end to end on a small BEIR folder written by the test.

use std::process::Command;

use crate::common;

fn write_dataset(dir: &std::path::Path) {
    let docs = [
        ("d1", "Rust ownership", "Each value in Rust has an owner; when the owner goes out of scope the value is dropped."),
        ("d2", "Borrowing", "References let you refer to a value without taking ownership of it."),
        ("d3", "Cargo", "Cargo is Rust's build system and package manager."),
        ("d4", "Photosynthesis", "Plants convert light energy into chemical energy stored in glucose."),
        ("d5", "Volcanoes", "Magma rising through the crust erupts as lava from volcanoes."),
        ("d6", "Tides", "The gravitational pull of the moon causes ocean tides."),
    ];
    let corpus: String = docs
        .iter()
        .map(|(id, t, x)| serde_json::json!({"_id": id, "title": t, "text": x}).to_string() + "\n")
        .collect();
    std::fs::write(dir.join("corpus.jsonl"), corpus).expect("corpus");
    let queries = [
        ("q1", "what happens to a value when its owner leaves scope"),
        ("q2", "which tool builds Rust packages"),
        ("q3", "how do plants store energy from sunlight"),
        ("q4", "why does the sea rise and fall"),
    ];
    let q: String = queries
        .iter()
        .map(|(id, t)| serde_json::json!({"_id": id, "text": t}).to_string() + "\n")
        .collect();
    std::fs::write(dir.join("queries.jsonl"), q).expect("queries");
    std::fs::create_dir_all(dir.join("qrels")).expect("qrels");
    std::fs::write(
        dir.join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\nq3\td4\t1\nq4\td6\t1\n",
    )
    .expect("qrels");
}

#[test]
fn eval_prints_metrics_and_caches_embeddings() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("tiny");
    std::fs::create_dir_all(&data).expect("mkdir");
    write_dataset(&data);
    let cache = dir.path().join("cache");
    let run = || {
        let out = Command::new(common::bin())
            .args([
                "eval",
                "--split",
                "test",
                "--mode",
                "all",
                "--json",
                "--dataset",
            ])
            .arg(&data)
            .arg("--cache-dir")
            .arg(&cache)
            .arg("--model")
            .arg(common::model_dir())
            .output()
            .expect("run eval");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json report")
    };
    let first = run();
    assert_eq!(first["embeddings_cached"], false);
    assert_eq!(first["queries"], 4);
    let modes = first["modes"].as_array().expect("modes");
    assert_eq!(modes.len(), 3);
    for m in modes {
        let ndcg = m["ndcg_at_10"].as_f64().expect("ndcg");
        assert!((0.0..=1.0).contains(&ndcg));
        if m["mode"] != "bm25" {
            assert!(
                ndcg > 0.9,
                "{m}: semantic queries on a tiny corpus should be solved"
            );
        }
    }
    let second = run();
    assert_eq!(
        second["embeddings_cached"], true,
        "second run must not re-embed"
    );
    assert_eq!(
        first["modes"][1]["ndcg_at_10"],
        second["modes"][1]["ndcg_at_10"]
    );
}

/// `--rerank` on a cross-encoder folder (the tests' own tiny model): every mode also reports
/// its reranked ranking and the nDCG@10 change.
#[test]
fn eval_reports_the_ndcg_change_of_a_reranker() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("tiny");
    std::fs::create_dir_all(&data).expect("mkdir");
    write_dataset(&data);
    let model = dir.path().join("tiny-ce");
    common::tiny_cross_encoder(&model);
    let run = |json: bool| {
        let mut cmd = Command::new(common::bin());
        cmd.args([
            "eval",
            "--split",
            "test",
            "--mode",
            "hybrid",
            "--rerank-candidates",
            "4",
        ])
        .arg("--dataset")
        .arg(&data)
        .arg("--rerank")
        .arg(&model)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .arg("--model")
        .arg(common::model_dir());
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().expect("run eval");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let report: serde_json::Value = serde_json::from_str(&run(true)).expect("json report");
    let mode = &report["modes"][0];
    let reranked = &mode["reranked"];
    assert_eq!(reranked["candidates"], 4, "{report}");
    assert!(reranked["model"]
        .as_str()
        .is_some_and(|m| m.starts_with("tiny-ce@")));
    let (before, after) = (
        mode["ndcg_at_10"].as_f64().expect("ndcg"),
        reranked["ndcg_at_10"].as_f64().expect("reranked ndcg"),
    );
    let change = reranked["ndcg_at_10_change"].as_f64().expect("change");
    assert!((change - (after - before)).abs() < 1e-9, "{report}");
    assert!((0.0..=1.0).contains(&after));
    // Outside the candidates nothing moves: recall@100 is the mode's own.
    assert_eq!(reranked["recall_at_100"], mode["recall_at_100"]);
    let table = run(false);
    assert!(
        table.contains("+rerank") && table.contains("nDCG@10"),
        "{table}"
    );
}
