//! The collection through its public API: filters proven against brute force, tombstones,
//! compaction, persistence and model stamps.

use std::collections::{BTreeMap, HashSet};

use groundwork::index::dense::HnswParams;
use groundwork::index::{
    Collection, CollectionOptions, Filter, IndexError, IndexStamp, NewPoint, PointMeta, SearchMode,
    SearchRequest,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIM: usize = 32;
const MODEL: &str = "test-model@0";

fn unit(rng: &mut StdRng) -> Vec<f32> {
    let mut v: Vec<f32> = (0..DIM).map(|_| rng.random::<f32>() - 0.5).collect();
    groundwork::embed::l2_normalize(&mut v);
    v
}

fn options(exact_threshold: usize) -> CollectionOptions {
    CollectionOptions {
        hnsw: HnswParams {
            m: 16,
            ef_construction: 100,
            ef_search: 64,
            exact_threshold,
        },
        ..Default::default()
    }
}

/// `n` points over 50 documents in 2 KBs, with a `colour` tag; texts carry a word per document.
fn build(
    n: usize,
    exact_threshold: usize,
    seed: u64,
) -> (Collection, Vec<Vec<f32>>, Vec<PointMeta>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let stamp = IndexStamp {
        model_id: MODEL.into(),
        dimension: DIM,
    };
    let mut c = Collection::new(stamp, options(exact_threshold));
    let vectors: Vec<Vec<f32>> = (0..n).map(|_| unit(&mut rng)).collect();
    let metas: Vec<PointMeta> = (0..n)
        .map(|i| PointMeta {
            chunk_id: i as u64,
            document_id: format!("doc{}", i % 50),
            kb: if i % 2 == 0 {
                "even".into()
            } else {
                "odd".into()
            },
            metadata: BTreeMap::from([("colour".into(), ["red", "green", "blue"][i % 3].into())]),
        })
        .collect();
    let texts: Vec<String> = (0..n)
        .map(|i| format!("word{} common text", i % 50))
        .collect();
    let points = metas
        .iter()
        .zip(&vectors)
        .zip(&texts)
        .map(|((m, v), t)| NewPoint {
            meta: m.clone(),
            vector: v.clone(),
            text: t,
        })
        .collect();
    c.upsert(MODEL, points).expect("upsert");
    (c, vectors, metas)
}

fn dense(c: &Collection, q: &[f32], k: usize, filter: &Filter) -> Vec<u64> {
    c.search(&SearchRequest {
        vector: Some(q),
        text: "",
        k,
        mode: SearchMode::Dense,
        filter,
    })
    .expect("search")
    .into_iter()
    .map(|h| h.chunk_id)
    .collect()
}

fn brute(
    vectors: &[Vec<f32>],
    metas: &[PointMeta],
    dead: &HashSet<u64>,
    q: &[f32],
    k: usize,
    f: &Filter,
) -> Vec<u64> {
    let mut scored: Vec<(f32, u64)> = vectors
        .iter()
        .zip(metas)
        .filter(|(_, m)| !dead.contains(&m.chunk_id) && f.matches(m))
        .map(|(v, m)| (v.iter().zip(q).map(|(a, b)| a * b).sum(), m.chunk_id))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().take(k).map(|s| s.1).collect()
}

#[test]
fn filtered_graph_search_matches_brute_force() {
    let (c, vectors, metas) = build(4000, 500, 7);
    assert!(c.has_graph());
    let mut rng = StdRng::seed_from_u64(99);
    let filters = [
        Filter {
            document_ids: Some(vec!["doc3".into()]),
            ..Default::default()
        },
        Filter {
            kb: Some("odd".into()),
            ..Default::default()
        },
        Filter {
            kb: Some("even".into()),
            metadata: BTreeMap::from([("colour".into(), "blue".into())]),
            ..Default::default()
        },
        Filter {
            metadata: BTreeMap::from([("colour".into(), "none".into())]),
            ..Default::default()
        },
    ];
    let none = HashSet::new();
    for (fi, f) in filters.iter().enumerate() {
        let (mut recall_hits, mut wanted) = (0, 0);
        for _ in 0..30 {
            let q = unit(&mut rng);
            let got = dense(&c, &q, 10, f);
            let truth = brute(&vectors, &metas, &none, &q, 10, f);
            assert_eq!(
                got.len(),
                truth.len(),
                "filter {fi}: k results whenever k match"
            );
            assert!(
                got.iter().all(|id| f.matches(&metas[*id as usize])),
                "filter {fi} leaked"
            );
            recall_hits += got.iter().filter(|id| truth.contains(id)).count();
            wanted += truth.len();
        }
        let recall = recall_hits as f64 / wanted.max(1) as f64;
        assert!(wanted == 0 || recall >= 0.9, "filter {fi}: recall {recall}");
    }
}

#[test]
fn deletes_hide_points_and_compaction_keeps_results() {
    let (mut c, vectors, metas) = build(3000, 500, 11);
    let mut dead = HashSet::new();
    for d in 0..20 {
        let doc = format!("doc{d}");
        let removed = c.delete_document(&doc);
        assert_eq!(removed, 60);
        dead.extend(
            metas
                .iter()
                .filter(|m| m.document_id == doc)
                .map(|m| m.chunk_id),
        );
    }
    // 1200 of 3000 slots died: compaction ran on the way (threshold 20%).
    assert!(
        c.tombstones() < 600,
        "compaction should have run, {} tombstones",
        c.tombstones()
    );
    assert_eq!(c.len(), 1800);
    let mut rng = StdRng::seed_from_u64(5);
    let mut hits = 0;
    for _ in 0..30 {
        let q = unit(&mut rng);
        let got = dense(&c, &q, 10, &Filter::default());
        let truth = brute(&vectors, &metas, &dead, &q, 10, &Filter::default());
        assert!(
            got.iter().all(|id| !dead.contains(id)),
            "deleted chunk returned"
        );
        hits += got.iter().filter(|id| truth.contains(id)).count();
    }
    assert!(
        hits as f64 / 300.0 >= 0.9,
        "recall after compaction {hits}/300"
    );
    let lexical = c
        .search(&SearchRequest {
            vector: None,
            text: "word3",
            k: 10,
            mode: SearchMode::Bm25,
            filter: &Filter::default(),
        })
        .expect("bm25");
    assert!(lexical.is_empty(), "deleted document still found by BM25");
}

#[test]
fn saved_collection_reloads_with_identical_results() {
    let dir = tempfile::tempdir().expect("tmp");
    let (mut c, _, _) = build(2500, 1000, 3);
    c.delete_chunks(&[1, 2, 3]);
    c.save(dir.path()).expect("save");
    let stamp = c.stamp().clone();
    let loaded = Collection::load(dir.path(), Some(&stamp)).expect("load");
    assert_eq!(loaded.len(), c.len());
    assert!(loaded.has_graph());
    let mut rng = StdRng::seed_from_u64(8);
    for mode in [SearchMode::Dense, SearchMode::Bm25, SearchMode::Hybrid] {
        let q = unit(&mut rng);
        let req = SearchRequest {
            vector: Some(&q),
            text: "word7 common",
            k: 10,
            mode,
            filter: &Filter::default(),
        };
        assert_eq!(
            c.search(&req).expect("a"),
            loaded.search(&req).expect("b"),
            "{mode:?}"
        );
    }
    // A second save makes a new generation and leaves exactly one behind.
    loaded.save(dir.path()).expect("save again");
    let gens = std::fs::read_dir(dir.path())
        .expect("ls")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("gen-"))
        .count();
    assert_eq!(gens, 1);
}

#[test]
fn damaged_graph_is_rebuilt_from_vectors() {
    let dir = tempfile::tempdir().expect("tmp");
    let (c, _, _) = build(1500, 500, 4);
    c.save(dir.path()).expect("save");
    let current = std::fs::read_to_string(dir.path().join("CURRENT")).expect("current");
    let gen = dir.path().join(current.trim());
    for entry in std::fs::read_dir(&gen).expect("ls").flatten() {
        if entry.file_name().to_string_lossy().contains("hnsw.graph") {
            std::fs::write(entry.path(), b"garbage").expect("damage");
        }
    }
    let loaded = Collection::load(dir.path(), None).expect("load despite graph damage");
    let mut rng = StdRng::seed_from_u64(1);
    let q = unit(&mut rng);
    assert_eq!(dense(&loaded, &q, 5, &Filter::default()).len(), 5);
}

#[test]
fn other_models_are_refused() {
    let (mut c, _, _) = build(10, 1000, 2);
    let mut rng = StdRng::seed_from_u64(2);
    let point = |v: Vec<f32>| NewPoint {
        meta: PointMeta {
            chunk_id: 99,
            document_id: "x".into(),
            kb: "k".into(),
            metadata: BTreeMap::new(),
        },
        vector: v,
        text: "x",
    };
    let err = c
        .upsert("other-model@1", vec![point(unit(&mut rng))])
        .expect_err("model");
    assert!(matches!(err, IndexError::ModelMismatch { .. }));
    let err = c
        .upsert(MODEL, vec![point(vec![0.5; DIM + 1])])
        .expect_err("dim");
    assert!(matches!(err, IndexError::Dimension { .. }));
    let dir = tempfile::tempdir().expect("tmp");
    c.save(dir.path()).expect("save");
    let other = IndexStamp {
        model_id: "bge-small@x".into(),
        dimension: 384,
    };
    let err = Collection::load(dir.path(), Some(&other))
        .err()
        .expect("stamp mismatch");
    assert!(matches!(err, IndexError::ModelMismatch { .. }), "{err}");
}

#[test]
fn upsert_replaces_a_chunk() {
    let (mut c, _, _) = build(100, 1000, 9);
    let mut rng = StdRng::seed_from_u64(10);
    let v = unit(&mut rng);
    c.upsert(
        MODEL,
        vec![NewPoint {
            meta: PointMeta {
                chunk_id: 5,
                document_id: "doc5".into(),
                kb: "odd".into(),
                metadata: BTreeMap::new(),
            },
            vector: v.clone(),
            text: "replacement",
        }],
    )
    .expect("upsert");
    assert_eq!(c.len(), 100);
    assert_eq!(dense(&c, &v, 1, &Filter::default()), vec![5]);
}
