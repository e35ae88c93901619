"""Switching adapters on a loaded model vs. loading the base again with the other adapter.

Ours: `engine.adapters.AdapterSet` — each adapter read once, then `activate(name)` (PEFT
``set_adapter``) and `activate(None)` (adapter layers off) on the same weights. Baseline: what a
tool without hot-swap does for each switch — `models.load` the base and
``PeftModel.from_pretrained`` the adapter. Both on the real default model, same process; the
adapters are random LoRAs (r=16, all linear layers) saved to a temporary folder.

    .venv/bin/python bench/adapter_swap.py [--switches 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _save_lora(model_dir: str, out: Path, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model

    from engine import models

    loaded = models.load(model_dir)
    torch.manual_seed(seed)
    config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                        init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(loaded.model, config).save_pretrained(str(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--baseline-switches", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from peft import PeftModel

    from engine import models
    from engine.adapters import AdapterSet

    model_dir = str(models.local_folder(models.DEFAULT_MODEL))
    with tempfile.TemporaryDirectory() as tmp:
        a = _save_lora(model_dir, Path(tmp) / "a", 1)
        b = _save_lora(model_dir, Path(tmp) / "b", 2)

        loaded = models.load(model_dir)
        adapters = AdapterSet.of(loaded)
        start = time.perf_counter()
        names = [adapters.attach(str(a)), adapters.attach(str(b))]
        first = time.perf_counter() - start
        cycle = [names[0], None, names[1]]
        ours = []
        for i in range(args.switches):
            start = time.perf_counter()
            adapters.activate(cycle[i % len(cycle)])
            ours.append(time.perf_counter() - start)

        theirs = []
        for i in range(args.baseline_switches):
            start = time.perf_counter()
            base = models.load(model_dir)
            PeftModel.from_pretrained(base.model, str(a if i % 2 else b))
            theirs.append(time.perf_counter() - start)

    ours_ms = statistics.median(ours) * 1000
    theirs_ms = statistics.median(theirs) * 1000
    print(f"attach two adapters once:           {first * 1000:8.1f} ms")
    print(f"switch (AdapterSet.activate):        {ours_ms:8.3f} ms  (median of {len(ours)})")
    print(f"switch (reload base + adapter):      {theirs_ms:8.1f} ms  (median of {len(theirs)})")
    print(f"ratio reload / hot-swap:             {theirs_ms / ours_ms:8.0f}x")


if __name__ == "__main__":
    main()
