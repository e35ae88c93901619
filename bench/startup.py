"""Time to the TUI's first frame vs. `python -c "import torch"`, side by side.

Each measurement is a fresh interpreter (what a user pays on `tunedeck`): the app starts headless,
and the clock stops when the first frame has been composed and painted. The baseline is a bare
`import torch`, which a TUI that imported the ML stack at start-up would pay at least.

    .venv/bin/python bench/startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FIRST_FRAME = """
import time
t0 = time.perf_counter()
from tui.app import TunedeckApp

class Once(TunedeckApp):
    def on_mount(self):
        super().on_mount()
        self.call_after_refresh(self._done)

    def _done(self):
        print(f"FRAME {time.perf_counter() - t0:.4f}")
        self.exit()

Once(load_model=False).run(headless=True, size=(80, 24))
"""


def _wall(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    py = sys.executable
    _wall([py, "-c", "import torch"])  # warm the page cache for both sides alike
    _wall([py, "-c", FIRST_FRAME])
    ours, torch_only = [], []
    for _ in range(args.repeat):
        ours.append(_wall([py, "-c", FIRST_FRAME]))
        torch_only.append(_wall([py, "-c", "import torch"]))
    o, t = statistics.median(ours), statistics.median(torch_only)
    print(f"TUI first frame (process start → first frame): median {o:.3f} s over {args.repeat}")
    print(f"python -c 'import torch'                     : median {t:.3f} s over {args.repeat}")
    print(f"ratio first-frame / import-torch: {o / t:.2f}  (target: first frame <= 0.6 s)")


if __name__ == "__main__":
    main()
