"""The probe steps: is there a CUDA GPU, does it do bf16, do bitsandbytes' 4-bit kernels run on
it. Each answers from the device itself (a real 4-bit matmul, not a version table)."""

from __future__ import annotations

from typing import Any

from engine.gpu_check.report import Outcome

NO_GPU = ("no CUDA GPU: torch.cuda.is_available() is False; this check needs an NVIDIA GPU; "
          "CPU training is covered by `make test`")


def device(ctx: Any) -> Outcome:
    import torch

    if ctx.options.device == "cpu":
        return Outcome("ok", "cpu (--device cpu: the check's own test mode; no GPU numbers)",
                       {"device": "cpu", "cuda_available": torch.cuda.is_available(),
                        "torch": torch.__version__})
    if not torch.cuda.is_available():
        # A CPU-only torch build is the usual reason on a machine that does have a GPU.
        build = (f" (this torch {torch.__version__} is a CPU-only build: install a CUDA build "
                 "of torch)" if torch.version.cuda is None else "")
        return Outcome("failed", NO_GPU + build,
                       {"cuda_available": False, "torch": torch.__version__,
                        "torch_cuda": torch.version.cuda})
    props = torch.cuda.get_device_properties(0)
    count = torch.cuda.device_count()
    data = {"device": "cuda", "cuda_available": True, "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_mb": round(props.total_memory / 2**20), "device_count": count,
            "torch": torch.__version__, "torch_cuda": torch.version.cuda}
    more = f"; {count} GPUs, the check uses GPU 0" if count > 1 else ""
    return Outcome("ok", f"{props.name}, compute capability {data['capability']}, "
                   f"{props.total_memory / 2**30:.1f} GiB, CUDA {torch.version.cuda}, "
                   f"torch {torch.__version__}{more}", data)


def bf16(ctx: Any) -> Outcome:
    from engine import models
    from engine.training.config import TrainConfig
    from engine.training.shared import mixed_precision

    policy = models.device_policy(ctx.options.device)
    # The precision a `precision: auto` run trains in here, by the runner's own rule.
    precision, why = mixed_precision(TrainConfig(precision="auto"), policy.device,
                                     policy.dtype_name)
    data = {"bf16_supported": policy.bf16_supported, "dtype": policy.dtype_name,
            "training_precision": precision}
    if policy.device == "cuda" and not policy.bf16_supported:
        return Outcome("warn", f"not supported: this GPU trains in {precision} mixed precision "
                       f"({why}); bf16 needs compute capability 8.0 (Ampere) or newer", data)
    return Outcome("ok", f"{'supported; ' if policy.bf16_supported else ''}training runs "
                   f"{precision}{' mixed' if precision != 'fp32' else ''} ({why})", data)


def four_bit(ctx: Any) -> Outcome:
    from engine import models

    works, reason = models.probe_4bit(ctx.options.device)
    data = {"works": works, "reason": reason}
    if not works:
        return Outcome("failed", f"bitsandbytes 4-bit does not run: {reason}; QLoRA needs it "
                       "(a bitsandbytes build for this CUDA version, `pip install -U "
                       "bitsandbytes`)", data)
    import bitsandbytes

    data["bitsandbytes"] = bitsandbytes.__version__
    return Outcome("ok", f"{reason}; bitsandbytes {bitsandbytes.__version__}", data)
