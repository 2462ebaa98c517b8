#!/usr/bin/env python3
"""Measure the peers on exactly the inputs Groundwork's bench used, then print the ratios.

Reads bench-results/{passages.json, ann-N-vectors.f32, ann-N-queries.f32, retrieval.json}
written by `cargo bench --bench retrieval`, measures sentence-transformers (torch, CPU) and
hnswlib with the same settings, writes bench-results/peers.json and bench-results/summary.md.
"""

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "bench-results"
EFS = [16, 32, 64, 128, 256]


def bench_sentence_transformers(passages):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(2)
    model = SentenceTransformer(str(ROOT / "models" / "all-MiniLM-L6-v2"), device="cpu")
    model.encode(passages[:32], batch_size=32)
    rates = []
    for _ in range(3):
        t = time.perf_counter()
        model.encode(passages, batch_size=32, normalize_embeddings=True)
        rates.append(len(passages) / (time.perf_counter() - t))
    rate = statistics.median(rates)
    print(f"sentence-transformers: {rate:.1f} passages/s (torch {torch.__version__}, 2 threads)", file=sys.stderr)
    return {"passages_per_s": rate, "runs": rates, "torch": torch.__version__}


def export_onnx(model_dir, out_dir):
    """The model's safetensors exported to ONNX with torch (legacy exporter, opset 17), and an
    int8 copy from onnxruntime's dynamic quantization (its usual int8 recipe)."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    out_dir.mkdir(parents=True, exist_ok=True)
    fp32, int8 = out_dir / "model.onnx", out_dir / "model-int8.onnx"
    if not fp32.exists():
        model = AutoModel.from_pretrained(str(model_dir)).eval()
        ids = torch.ones(2, 16, dtype=torch.long)
        axes = {0: "batch", 1: "tokens"}
        torch.onnx.export(model, (ids, ids, torch.zeros_like(ids)), str(fp32), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state"],
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                                        "last_hidden_state": axes})
    if not int8.exists():
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    return {"fp32": fp32, "int8": int8}


def bench_onnxruntime(passages):
    """onnxruntime on the same weights: 2 threads, batches of 32 sorted by length (as
    sentence-transformers and Groundwork batch), tokenisation and mean pooling included."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    model_dir = ROOT / "models" / "all-MiniLM-L6-v2"
    files = export_onnx(model_dir, OUT / "onnx")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))

    def encode(session, texts):
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), 384), dtype=np.float32)
        for start in range(0, len(order), 32):
            members = order[start:start + 32]
            batch = tokenizer([texts[i] for i in members], padding=True, truncation=True, max_length=256,
                              return_tensors="np")
            feeds = {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
            hidden = session.run(None, feeds)[0]
            mask = batch["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            out[members] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return out

    results, vectors = {}, {}
    for name, path in files.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        encode(session, passages[:32])
        rates = []
        for _ in range(3):
            t = time.perf_counter()
            vectors[name] = encode(session, passages)
            rates.append(len(passages) / (time.perf_counter() - t))
        rate = statistics.median(rates)
        results[name] = {"passages_per_s": rate, "runs": rates}
        print(f"onnxruntime {name}: {rate:.1f} passages/s (onnxruntime {ort.__version__}, 2 threads)",
              file=sys.stderr)
    cos = (vectors["fp32"] * vectors["int8"]).sum(1)
    results["int8"]["cosine_to_fp32"] = {"min": float(cos.min()), "mean": float(cos.mean())}
    results["version"] = ort.__version__
    return results


def bench_hnswlib(n, dim=384):
    import hnswlib

    vectors = np.fromfile(OUT / f"ann-{n}-vectors.f32", dtype=np.float32).reshape(-1, dim)
    queries = np.fromfile(OUT / f"ann-{n}-queries.f32", dtype=np.float32).reshape(-1, dim)
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=n, M=16, ef_construction=200, random_seed=100)
    index.set_num_threads(2)
    t = time.perf_counter()
    index.add_items(vectors, np.arange(n))
    build = time.perf_counter() - t
    print(f"hnswlib {n}: built in {build:.1f} s", file=sys.stderr)
    sweep = []
    for ef in EFS:
        index.set_ef(ef)
        index.set_num_threads(1)
        lat = []
        t = time.perf_counter()
        for q in queries:
            s = time.perf_counter()
            index.knn_query(q, k=10)
            lat.append((time.perf_counter() - s) * 1e3)
        loop_qps = len(queries) / (time.perf_counter() - t)
        t = time.perf_counter()
        labels, _ = index.knn_query(queries, k=10)
        qps1 = len(queries) / (time.perf_counter() - t)
        index.set_num_threads(2)
        t = time.perf_counter()
        index.knn_query(queries, k=10)
        qps2 = len(queries) / (time.perf_counter() - t)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(labels, truth)])
        lat.sort()
        sweep.append({"ef": ef, "recall_at_10": float(recall), "qps_1_thread": qps1, "qps_2_threads": qps2,
                      "loop_qps_1_thread": loop_qps,
                      "p50_ms": lat[len(lat) // 2], "p99_ms": lat[int(len(lat) * 0.99) - 1]})
        print(f"hnswlib {n} ef={ef}: recall {recall:.3f}, {qps1:.0f} q/s (1 thread), {qps2:.0f} q/s (2 threads)",
              file=sys.stderr)
    return {"vectors": n, "build_s": build, "build_vectors_per_s": n / build, "sweep": sweep}


def at_recall(sweep, target=0.95):
    """The first sweep point reaching the target recall (the cheapest ef that does)."""
    for point in sweep:
        if point["recall_at_10"] >= target:
            return point
    return sweep[-1]


def main():
    ours = json.loads((OUT / "retrieval.json").read_text())
    passages = json.loads((OUT / "passages.json").read_text())
    # `--only embedding|ann` reruns one section's peers; the other keeps its last figures.
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
    previous = OUT / "peers.json"
    peers = json.loads(previous.read_text()) if previous.exists() else {}
    if only in (None, "embedding"):
        peers["sentence_transformers"] = bench_sentence_transformers(passages)
        peers["onnxruntime"] = bench_onnxruntime(passages)
    if only in (None, "ann"):
        peers["hnswlib"] = [bench_hnswlib(ann["vectors"]) for ann in ours["ann"]]
    previous.write_text(json.dumps(peers, indent=2))

    lines = ["# Retrieval benchmark (same machine, same run)", ""]
    configs = ours["embedding"]["configs"]
    st = peers["sentence_transformers"]["passages_per_s"]
    ort_fp32 = peers["onnxruntime"]["fp32"]["passages_per_s"]
    ort_int8 = peers["onnxruntime"]["int8"]["passages_per_s"]
    lines += [
        f"CPU flags: {' '.join(ours['machine'].get('cpu_flags', []))}",
        "",
        f"Embedding ({ours['embedding']['passages']} passages of 200-250 words, "
        f"mean {ours['embedding']['mean_tokens']:.0f} tokens after truncation, batch 32, 2 threads):",
        "",
        "| engine | passages/s | vs onnxruntime fp32 | vs sentence-transformers | cosine to fp32 (min / mean) |",
        "|---|---|---|---|---|",
    ]
    for c in configs:
        cos = c.get("cosine_to_f32")
        cos_text = "-" if cos is None else f"{cos['min']:.4f} / {cos['mean']:.4f}"
        lines.append(f"| Groundwork {c['precision']} {c['kernel']} (concurrent batches {c['concurrent_batches']}) "
                     f"| {c['passages_per_s']:.1f} | {c['passages_per_s'] / ort_fp32:.2f}x "
                     f"| {c['passages_per_s'] / st:.2f}x "
                     f"| {cos_text} |")
    cos = peers["onnxruntime"]["int8"]["cosine_to_fp32"]
    lines += [
        f"| onnxruntime {peers['onnxruntime']['version']} fp32 | {ort_fp32:.1f} | 1.00x | {ort_fp32 / st:.2f}x | - |",
        f"| onnxruntime int8 (dynamic quantization) | {ort_int8:.1f} | {ort_int8 / ort_fp32:.2f}x "
        f"| {ort_int8 / st:.2f}x | {cos['min']:.4f} / {cos['mean']:.4f} |",
        f"| sentence-transformers | {st:.1f} | {st / ort_fp32:.2f}x | 1.00x | - |",
        "",

    ]
    if ours.get("chunking"):
        lines += [f"Chunking: {ours['chunking']['mb_per_s_1_thread']:.2f} MB/s on 1 thread, "
                  f"{ours['chunking']['mb_per_s_2_threads']:.2f} MB/s on 2 ({ours['chunking']['chunks']} chunks)",
                  ""]
    lines += [
        "ANN (M=16, ef_construction=200, k=10, 1000 queries):",
        "",
        "| vectors | engine | build s | ef | recall@10 | q/s 1 thread | q/s 2 threads | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mine, theirs in zip(ours.get("ann") or [], peers.get("hnswlib", [])):
        for name, data in (("groundwork (hnsw_rs)", mine), ("hnswlib", theirs)):
            for p in data["sweep"]:
                lines.append(f"| {data['vectors']} | {name} | {data['build_s']:.1f} | {p['ef']} | "
                             f"{p['recall_at_10']:.3f} | {p['qps_1_thread']:.0f} | {p['qps_2_threads']:.0f} | "
                             f"{p['p50_ms']:.3f} | {p['p99_ms']:.3f} |")
        a, b = at_recall(mine["sweep"]), at_recall(theirs["sweep"])
        lines += ["",
                  f"At recall@10 >= 0.95 on {mine['vectors']} vectors: groundwork ef={a['ef']} "
                  f"{a['qps_1_thread']:.0f} q/s (1 thread) vs hnswlib ef={b['ef']} {b['qps_1_thread']:.0f} q/s: "
                  f"ratio {a['qps_1_thread'] / b['qps_1_thread']:.2f}x; 2 threads "
                  f"{a['qps_2_threads'] / b['qps_2_threads']:.2f}x. Build {mine['build_vectors_per_s']:.0f} vs "
                  f"{theirs['build_vectors_per_s']:.0f} vectors/s. Exact scan: {mine['exact_qps_2_threads']:.0f} q/s.",
                  ""]
    summary = "\n".join(lines)
    (OUT / "summary.md").write_text(summary + "\n")
    print(summary)


if __name__ == "__main__":
    main()
