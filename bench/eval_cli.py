"""`tunedeck eval matrix` from the command line vs the Evaluate screen's path (run_matrix on the
model the TUI already holds), same spec, side by side in one run; prints both and the ratio.

    .venv/bin/python bench/eval_cli.py [--limit 16] [--columns zs]

The CLI's extra time is its start (imports, loading the model); the generation is the same call.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="sample_data/sentiment")
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--columns", default="zs")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cli_args = ["eval", "matrix", "--data", args.data, "--limit", str(args.limit), "--columns",
                args.columns, "--no-cache", "--quiet", "--format", "json"]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cli.main", *cli_args], cwd=ROOT, check=True,
                   capture_output=True)
    cli = time.perf_counter() - started

    from engine import models
    from engine.evaluation import run_matrix
    from engine.evaluation.matrix import columns_from_names
    from engine.evaluation.spec import EvalSpec

    started = time.perf_counter()
    loaded = models.load(models.DEFAULT_MODEL)
    load = time.perf_counter() - started
    spec = EvalSpec(data=args.data, limit=args.limit, use_cache=False)
    started = time.perf_counter()
    run_matrix(spec, columns_from_names(args.columns, adapter=False), loaded=loaded, save=False)
    screen = time.perf_counter() - started
    print(f"{args.limit} examples, columns {args.columns}: CLI {cli:.1f} s in all; "
          f"the screen's path {screen:.1f} s on a loaded model (loading it: {load:.1f} s); "
          f"CLI / screen {cli / screen:.2f}x, CLI minus its start "
          f"{(cli - load) / screen:.2f}x")


if __name__ == "__main__":
    main()
