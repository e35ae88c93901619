"""Fake training runs holding real PEFT adapters, for tests that must not wait for a trainer.

The adapter is a LoRA with random (non-zero) weights, so it visibly changes the model's output.
The run directory is written through `RunDir`, like the runner writes it.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from engine import paths
from engine.training.rundir import RunDir, mark_checkpoint_complete, new_run_id


def make_run(model_dir: Path, *, name: str = "fake", seed: int = 0, quantized: bool = False,
             checkpoints: tuple[int, ...] = (), final: bool = True, r: int = 8,
             events: bool = True) -> RunDir:
    """A finished run on `model_dir` with a final adapter and/or checkpoints ``checkpoint-N``
    (each with its own random adapter: seed + N). ``quantized``: trained on a 4-bit base."""
    run = RunDir(paths.ensure_dir(paths.runs_dir() / new_run_id(name)))
    method = "qlora" if quantized else "lora"
    config = {"model": str(model_dir), "dataset": "sample_data/text_to_sql", "method": method,
              "lora_r": r, "lora_alpha": 2 * r, "max_steps": 40, "seed": seed, "name": name}
    run.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    run.write_status("done", model=str(model_dir), method=method, total_steps=40, step=40,
                     train_rows=100, started=1000.0, finished=1060.0)
    if events:
        for step in (10, 20, 30, 40):
            run.append_event("log", step=step, epoch=step / 40, loss=3.0 - step / 20, lr=1e-4,
                             grad_norm=1.0, tokens_per_s=100.0 + step, mem_mb=10.0)
            run.append_event("eval", step=step, eval_loss=2.5 - step / 40)
        run.append_event("state", state="done")
    targets = [(run.adapter_dir, seed)] if final else []
    targets += [(run.checkpoints_dir / f"checkpoint-{n}", seed + n) for n in checkpoints]
    for folder, s in targets:
        save_random_lora(model_dir, folder, seed=s, quantized=quantized, r=r)
    for n in checkpoints:  # as the runner leaves them: whole, marked
        mark_checkpoint_complete(run.checkpoints_dir / f"checkpoint-{n}", n)
    return run


def save_random_lora(model_dir: Path, out: Path, *, seed: int = 0, quantized: bool = False,
                     r: int = 8) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model

    from engine import models

    loaded = models.load(str(model_dir), quantize="4bit" if quantized else None, device="cpu")
    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", lora_dropout=0.0,
                        init_lora_weights=False, task_type="CAUSAL_LM")
    peft = get_peft_model(loaded.model, config)
    peft.save_pretrained(str(out))
    loaded.tokenizer.save_pretrained(str(out))
    return out
