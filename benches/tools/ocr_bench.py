#!/usr/bin/env python3
"""OCR throughput: pages per second of `groundwork extract` on a scanned PDF (pages with no text
layer), against the pipeline a user would otherwise script — poppler's `pdftoppm` then
`tesseract`, one page after another, Tesseract with its default threads — on the same pages in
the same run. Prints the CPU flags, pages/s of each, the ratio, and the words recognised.

    .venv-test/bin/python benches/tools/ocr_bench.py [BINARY] [--pages 20] [--runs 3]

(Pillow draws the pages; the test environment `.venv-test` has it.)
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time

from PIL import Image, ImageDraw, ImageFont

WORDS = ("invoice payment delivery warehouse contract quantity amount customer supplier "
         "shipment order account balance schedule harbour office").split()


def cpu_flags():
    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
                break
    keep = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"]
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                  if l.startswith("model name")), "?")
    return f"{model}; {os.cpu_count()} cores; " + ", ".join(k for k in keep if k in flags)


def page(n):
    img = Image.new("L", (1700, 2200), 245)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=40)
    for i in range(30):
        words = " ".join(WORDS[(n * 7 + i * 3 + k) % len(WORDS)] for k in range(6))
        draw.text((120, 120 + i * 66), f"{n}.{i} {words}", fill=0, font=font)
    return img


def main():
    ap = argparse.ArgumentParser()
    default = "target/release/groundwork" if os.path.exists("target/release/groundwork") \
        else "target/debug/groundwork"
    ap.add_argument("binary", nargs="?", default=default)
    ap.add_argument("--pages", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    pdf = os.path.join(tmp, "scan.pdf")
    pages = [page(n) for n in range(args.pages)]
    pages[0].save(pdf, "PDF", resolution=200, save_all=True, append_images=pages[1:])
    print(f"CPU: {cpu_flags()}")
    print(f"{args.pages} scanned pages (200 dpi images, 30 lines each), rendered at 300 dpi")

    ours = []
    for _ in range(args.runs):
        t = time.perf_counter()
        out = subprocess.run([args.binary, "extract", "--json", pdf], capture_output=True,
                             check=True)
        ours.append(time.perf_counter() - t)
    row = json.loads(out.stdout.decode().splitlines()[-1])
    assert row.get("ocr_pages") == args.pages, row

    def pipeline(count, env):
        t = time.perf_counter()
        words = 0
        for n in range(1, count + 1):
            png = os.path.join(tmp, "p")
            subprocess.run(["pdftoppm", "-f", str(n), "-l", str(n), "-r", "300", "-gray", "-png",
                            "-singlefile", pdf, png], check=True)
            txt = subprocess.run(["tesseract", png + ".png", "stdout", "-l", "eng"],
                                 capture_output=True, check=True, env=env).stdout.decode()
            words += len(txt.split())
        return count / (time.perf_counter() - t), words

    serial_env = dict(os.environ, OMP_THREAD_LIMIT="1")
    serial = [pipeline(args.pages, serial_env) for _ in range(args.runs)]
    # Tesseract's default OpenMP threads oversubscribe two cores badly: a few pages tell.
    few = min(4, args.pages)
    default = pipeline(few, dict(os.environ))
    o = args.pages / statistics.median(ours)
    s1 = statistics.median(r[0] for r in serial)
    print(f"groundwork extract:                    {o:6.2f} pages/s (median of {args.runs}; "
          f"{row['non_whitespace_chars']} characters)")
    print(f"pdftoppm + tesseract, 1 thread/page:   {s1:6.2f} pages/s ({serial[0][1]} words)")
    print(f"pdftoppm + tesseract, default threads: {default[0]:6.2f} pages/s (first {few} pages)")
    print(f"ratio groundwork / serial pipeline:  {o / s1:.2f}x; / default threads: "
          f"{o / default[0]:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
