#!/usr/bin/env python3
"""Groundwork's extraction against poppler on a folder of PDFs (e.g. ../shared/pdfs).

Runs `groundwork extract --json` over every PDF and compares the non-space characters found
with `pdftotext`'s (run here, in the same machine and run). Prints the counts the issue asks
for: files where poppler finds >= 20 non-space characters and Groundwork finds < 50 % of them;
encrypted files that end `malformed`; how many files gained text against a previous report.

    python3 benches/tools/pdf_corpus.py BINARY DIR [--save report.json] [--against old.json]
"""
import argparse, json, os, subprocess, sys


def poppler_chars(path):
    try:
        out = subprocess.run(["pdftotext", "-enc", "UTF-8", path, "-"], capture_output=True,
                             timeout=60)
    except subprocess.TimeoutExpired:
        return 0
    return sum(1 for c in out.stdout.decode("utf-8", "replace") if not c.isspace())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("dir")
    ap.add_argument("--save")
    ap.add_argument("--against")
    args = ap.parse_args()
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(args.dir) for f in fs
                   if f.lower().endswith(".pdf"))
    rows = {}
    for path in files:
        out = subprocess.run([args.binary, "extract", "--json", path], capture_output=True)
        line = out.stdout.decode().strip().splitlines()
        row = json.loads(line[-1]) if line else {"status": "error", "code": "no_output"}
        row["poppler"] = poppler_chars(path)
        row["ours"] = row.get("non_whitespace_chars", 0)
        rows[os.path.relpath(path, args.dir)] = row
    lost = [f for f, r in rows.items() if r["poppler"] >= 20 and r["ours"] < 0.5 * r["poppler"]]
    encrypted = [f for f in rows if b"/Encrypt" in open(os.path.join(args.dir, f), "rb").read()]
    enc_malformed = [f for f in encrypted if rows[f].get("code") == "malformed"]
    enc_outcomes = {}
    for f in encrypted:
        k = rows[f].get("code", "ok") if rows[f]["status"] != "ok" else "opened"
        enc_outcomes[k] = enc_outcomes.get(k, 0) + 1
    codes = {}
    for r in rows.values():
        k = r.get("code", "ok") if r["status"] != "ok" else "ok"
        codes[k] = codes.get(k, 0) + 1
    ocr_files = sum(1 for r in rows.values() if r.get("ocr_pages", 0) > 0)
    print(f"files: {len(rows)}; outcomes: {dict(sorted(codes.items()))}; OCR used on {ocr_files}")
    print(f"poppler >= 20 chars and Groundwork < 50 % of them: {len(lost)}")
    for f in lost:
        r = rows[f]
        print(f"  {f}: poppler {r['poppler']}, groundwork {r['ours']} ({r.get('code', 'ok')})")
    print(f"with an /Encrypt entry: {len(encrypted)}: {dict(sorted(enc_outcomes.items()))}; "
          f"`malformed`: {len(enc_malformed)}")
    for f in enc_malformed:
        print(f"  {f}: {rows[f].get('error')}")
    if args.against:
        old = json.load(open(args.against))
        gained = [f for f, r in rows.items() if r["ours"] > 0 and old.get(f, {}).get("ours", 0) == 0]
        print(f"files that gained text against {args.against}: {len(gained)}")
    if args.save:
        json.dump(rows, open(args.save, "w"), indent=1)


if __name__ == "__main__":
    sys.exit(main())
