"""`tunedeck gpu-check`: one command that shows the training path works on an NVIDIA GPU.

It probes CUDA, bf16 and bitsandbytes 4-bit; trains the shipped QLoRA recipe as a real run;
measures our trainer's tokens/s and peak memory against a plain `transformers.Trainer` + PEFT on
the same data and batch; merges the adapter; and evaluates base, adapter and merged model on
held-out SQL. `report` holds the sequencing and the table (a failure is a row, what needs it is
skipped), `probes` the device checks, `steps` the heavy steps, `throughput` the measurement that
`bench/train_throughput.py` shares. See docs/gpu-check.md.
"""

from engine.gpu_check.report import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NO_GPU,
    EXIT_OK,
    Outcome,
    Report,
    Row,
    Step,
    run_steps,
)
from engine.gpu_check.steps import Context, Options, check_steps, run_check

__all__ = [
    "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_NO_GPU", "EXIT_OK", "Context", "Options", "Outcome",
    "Report", "Row", "Step", "check_steps", "run_check", "run_steps",
]
