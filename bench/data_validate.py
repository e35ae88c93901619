"""Streaming validation of a 1,000,000-row JSONL: time and peak memory, ours vs baselines.

    .venv/bin/python bench/data_validate.py [--rows N]

Writes the file into a temp dir, then runs each contender in its own child process (so peak RSS
is each one's own, from `os.wait4`'s rusage):

- ours: `engine.data.validate` (reads line by line; every check; duplicate detection),
- json-all: `json.loads` of every line into one list (parsing only, no checks),
- datasets: `datasets.load_dataset("json", ...)` (Arrow; builds its cache in the temp dir),
- floor: the interpreter with our imports and nothing else (the RSS every contender starts from).

Prints seconds and peak RSS per contender, and the ratios ours / baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = {
    "floor": "import engine.data, numpy",
    "ours": "import engine.data as d; r = d.validate(PATH); print(r.summary()[-60:])",
    "json-all": "import json\nwith open(PATH, encoding='utf-8') as f: rows = [json.loads(l) for l "
                "in f]\nprint(len(rows))",
    "datasets": "from datasets import load_dataset; ds = load_dataset('json', data_files=PATH, "
                "split='train', cache_dir=CACHE); print(len(ds))",
}


def write_file(path: Path, rows: int) -> None:
    rng = random.Random(0)
    words = ["the", "a", "model", "answer", "question", "customer", "order", "store", "price",
             "total", "why", "how"]
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(rows):
            prompt = " ".join(rng.choice(words) for _ in range(rng.randint(6, 20)))
            fh.write(json.dumps({"instruction": "Answer the question.",
                                 "prompt": f"{prompt} #{i}", "completion": f"answer {i}"}) + "\n")


def run_child(name: str, path: Path, cache: Path) -> tuple[float, float, str]:
    """Seconds and this child's own peak RSS (MiB, from wait4's rusage)."""
    code = f"PATH = {str(path)!r}; CACHE = {str(cache)!r}\n" + CHILD[name]
    out = path.parent / f"{name}.out"
    start = time.perf_counter()
    with open(out, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=fh,
                                stderr=subprocess.STDOUT,
                                env={**os.environ, "HF_DATASETS_OFFLINE": "1",
                                     "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = out.read_text(errors="replace").strip()
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{text[-2000:]}")
    return seconds, usage.ru_maxrss / 1024, text.splitlines()[-1] if text else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-datasets", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.jsonl"
        t = time.perf_counter()
        write_file(path, args.rows)
        print(f"{args.rows:,} rows, {path.stat().st_size / 2**20:.0f} MiB written in "
              f"{time.perf_counter() - t:.1f} s")
        results = {}
        order = ["floor", "ours", "datasets", "json-all"]
        if args.skip_datasets:
            order.remove("datasets")
        for name in order:
            seconds, rss, tail = run_child(name, path, Path(tmp) / "hf-cache")
            results[name] = (seconds, rss)
            print(f"{name:>9}: {seconds:7.1f} s  peak RSS {rss:8.0f} MiB   ({tail})")
        ours_s, ours_rss = results["ours"]
        floor_rss = results["floor"][1]
        for name in order:
            if name in ("ours", "floor"):
                continue
            s, rss = results[name]
            print(f"ours / {name}: time {ours_s / s:.2f}x, peak RSS {ours_rss / rss:.2f}x, "
                  f"RSS above the floor {(ours_rss - floor_rss) / max(1, rss - floor_rss):.3f}x")


if __name__ == "__main__":
    main()
