"""How a run's processes start: the runner alone (``python -m engine.training RUN_DIR``) or
``accelerate launch`` with N processes, optionally with an accelerate config file (DDP, FSDP,
DeepSpeed ZeRO-2 / ZeRO-3 ship under configs/accelerate/) and several machines.

`LaunchOptions` is recorded in status.json (``launch``), so `resume` starts a run the way it
was started. `check_launch` refuses, before anything starts, the combinations that would fail
minutes later on the GPUs or silently train differently, each with its fix.

Importing this module loads no ML library.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.errors import TunedeckError
from engine.training.config import CONFIGS_DIR, TrainConfig

ACCELERATE_CONFIGS_DIR = CONFIGS_DIR / "accelerate"
LAUNCHERS = ("python", "accelerate")
# accelerate's distributed_type values that shard or replicate over GPUs only.
GPU_ONLY = ("FSDP", "DEEPSPEED")


@dataclass(frozen=True)
class AccelerateConfig:
    """A shipped accelerate config: its name (for --accelerate-config), file and what it does."""

    name: str
    path: Path
    summary: str


def accelerate_configs() -> list[AccelerateConfig]:
    """The accelerate configs the project ships (configs/accelerate/*.yaml), by name; the
    summary is each file's first comment line."""
    found = []
    for path in sorted(ACCELERATE_CONFIGS_DIR.glob("*.yaml")):
        summary = ""
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("#"):
                summary = line.lstrip("# ").strip()
                break
        found.append(AccelerateConfig(path.stem, path, summary))
    return found


def resolve_accelerate_config(ref: str) -> Path:
    """A shipped config's name, or the path of an accelerate config file."""
    shipped = {c.name: c.path for c in accelerate_configs()}
    if ref in shipped:
        return shipped[ref]
    path = Path(ref).expanduser()
    if path.is_file():
        return path.resolve()
    names = ", ".join(shipped) or "none"
    raise TunedeckError(
        f"--accelerate-config: {ref} is neither a shipped accelerate config ({names}) nor a "
        "file; give one of those names, or the path of a file `accelerate config` wrote.")


def read_accelerate_config(path: str | Path) -> dict[str, Any]:
    """The accelerate config file as a mapping, checked the way `accelerate launch` reads it
    (unknown keys, a missing distributed_type), so a bad file fails here and not on launch."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise TunedeckError(f"{path}: cannot read the accelerate config ({err.strerror or err}); "
                            "check the path, or choose a shipped one (--accelerate-config ddp)."
                            ) from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        raise TunedeckError(f"{path}:{line} is not valid YAML ({getattr(err, 'problem', err)}); "
                            "fix it, or write it anew with `accelerate config --config_file "
                            f"{path}`.") from None
    if not isinstance(data, dict):
        raise TunedeckError(f"{path}: an accelerate config is a YAML mapping (distributed_type: "
                            "..., num_processes: ...); this file holds none. Fix it, or choose "
                            "a shipped one (--accelerate-config ddp).")
    from accelerate.commands.config.config_args import ClusterConfig

    try:
        ClusterConfig(**ClusterConfig.process_config(dict(data)))
    except (TypeError, ValueError) as err:
        raise TunedeckError(f"{path}: accelerate cannot read this config ({err}); fix that "
                            "key, or write the file anew with `accelerate config`.") from None
    return data


@dataclass(frozen=True)
class LaunchOptions:
    """How a run's processes start (recorded in status.json as ``launch``)."""

    launcher: str = "python"  # python | accelerate
    num_processes: int = 1  # over all machines
    accelerate_config: str | None = None  # the accelerate config file (an absolute path)
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int | None = None

    @classmethod
    def plan(cls, launcher: str | None = None, num_processes: int | None = None,
             accelerate_config: str | None = None, num_machines: int | None = None,
             machine_rank: int | None = None, main_process_ip: str | None = None,
             main_process_port: int | None = None) -> LaunchOptions:
        """The options from what a user gave, or a TunedeckError naming the contradiction.
        Any accelerate option means the accelerate launcher; the number of processes is the
        one given, else the config file's, else one per GPU (one on a CPU)."""
        wants = any(v is not None for v in (accelerate_config, num_machines, machine_rank,
                                            main_process_ip, main_process_port)) or (
            num_processes is not None and num_processes > 1)
        launcher = launcher or ("accelerate" if wants else "python")
        if launcher not in LAUNCHERS:
            raise TunedeckError(f"--launcher: {launcher!r} is not one of {', '.join(LAUNCHERS)}.")
        if launcher == "python":
            if wants:
                raise TunedeckError(
                    "--launcher python starts one process; --num-processes, "
                    "--accelerate-config and the machine options need --launcher accelerate.")
            return cls()
        path = str(resolve_accelerate_config(accelerate_config)) if accelerate_config else None
        file = read_accelerate_config(path) if path else {}
        in_file = file.get("num_processes")
        if num_processes is None:
            num_processes = in_file if isinstance(in_file, int) and in_file > 0 else gpu_count()
        elif isinstance(in_file, int) and in_file > 0 and in_file != num_processes:
            raise TunedeckError(
                f"--num-processes {num_processes} contradicts num_processes: {in_file} in "
                f"{path}; give --num-processes {in_file}, or change the file (the CLI value "
                "would win silently otherwise).")
        if num_processes < 1:
            raise TunedeckError(f"--num-processes must be at least 1 (got {num_processes}).")
        machines = num_machines if num_machines is not None else int(file.get("num_machines", 1))
        rank = machine_rank if machine_rank is not None else int(file.get("machine_rank", 0))
        if machines < 1 or not 0 <= rank < machines:
            raise TunedeckError(f"--machine-rank {rank} must be in 0 … {machines - 1} for "
                                f"--num-machines {machines}.")
        if num_processes % machines:
            raise TunedeckError(f"--num-processes {num_processes} counts the processes of all "
                                f"{machines} machines: it must be a multiple of "
                                f"--num-machines {machines}.")
        ip = main_process_ip or file.get("main_process_ip")
        if machines > 1 and not ip:
            raise TunedeckError(f"--num-machines {machines} needs --main-process-ip: the "
                                "address of machine rank 0, which every machine connects to.")
        return cls("accelerate", num_processes, path, machines, rank, main_process_ip,
                   main_process_port)

    # ------------------------------------------------------------------ record
    def to_status(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_status(cls, status: dict[str, Any]) -> LaunchOptions:
        """The options a run was started with (runs from before `launch` was recorded kept
        only the launcher and the number of processes)."""
        recorded = status.get("launch")
        if isinstance(recorded, dict):
            known = {k: v for k, v in recorded.items() if k in cls.__dataclass_fields__}
            return cls(**known)
        return cls(status.get("launcher") or "python", int(status.get("num_processes") or 1))

    # ------------------------------------------------------------------ the command
    def command(self, run_dir: str | Path) -> list[str]:
        if self.launcher != "accelerate":
            return [sys.executable, "-m", "engine.training", str(run_dir)]
        if self.num_processes < 1:
            raise TunedeckError(f"--num-processes must be at least 1 (got {self.num_processes}).")
        cmd = [sys.executable, "-m", "accelerate.commands.launch"]
        file: dict[str, Any] = {}
        if self.accelerate_config:
            file = read_accelerate_config(self.accelerate_config)
            cmd += ["--config_file", self.accelerate_config]
        cmd += ["--num_processes", str(self.num_processes)]
        if not self.accelerate_config:
            if self.num_processes > 1:
                # DDP through torchrun: NCCL on GPUs, gloo on a CPU (accelerate's --cpu would
                # start one process only).
                cmd.append("--multi_gpu")
            # The precision is the training config's (the trainer sets it); said here so
            # accelerate does not warn that it guessed.
            cmd += ["--mixed_precision", "no", "--dynamo_backend", "no"]
        cmd += ["--num_machines", str(self.num_machines)]
        if self.num_machines > 1:
            cmd += ["--machine_rank", str(self.machine_rank)]
        if self.main_process_ip:
            cmd += ["--main_process_ip", self.main_process_ip]
        port = self.main_process_port
        if port is None and self.num_machines == 1 and "main_process_port" not in file:
            port = 0  # accelerate picks a free one: two runs on one machine do not collide
        if port is not None:
            cmd += ["--main_process_port", str(port)]
        return [*cmd, "-m", "engine.training", str(run_dir)]

    def describe(self) -> str:
        if self.launcher != "accelerate":
            return ""
        parts = ["accelerate"]
        if self.accelerate_config:
            shipped = {str(c.path): c.name for c in accelerate_configs()}
            parts.append(f"config {shipped.get(self.accelerate_config, self.accelerate_config)}")
        if self.num_machines > 1:
            parts.append(f"{self.num_machines} machines, this one rank {self.machine_rank}")
        return ", ".join(parts)


def gpu_count() -> int:
    """CUDA devices on this machine, at least 1 (a CPU run is one process unless told)."""
    import torch

    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def check_launch(options: LaunchOptions, config: TrainConfig,
                 device: str | None = None) -> tuple[list[str], list[str]]:
    """(errors, warnings) for running `config` with `options` on this machine's `device`
    (default: the device policy's)."""
    errors: list[str] = []
    warnings: list[str] = []
    if options.launcher != "accelerate":
        return errors, warnings
    from engine import models

    policy = models.device_policy(device)
    file = read_accelerate_config(options.accelerate_config) if options.accelerate_config else {}
    where = options.accelerate_config or "--launcher accelerate"
    kind = str(file.get("distributed_type", "MULTI_GPU" if options.num_processes > 1 else "NO"))
    kind = kind.upper().removeprefix("DISTRIBUTEDTYPE.")
    if kind == "DEEPSPEED" and importlib.util.find_spec("deepspeed") is None:
        errors.append(f"{where}: DeepSpeed is chosen but the deepspeed package is not "
                      "installed; pip install deepspeed (it builds against this CUDA), or use "
                      "--accelerate-config ddp / fsdp.")
    if kind in GPU_ONLY and policy.device != "cuda":
        name = "FSDP" if kind == "FSDP" else "DeepSpeed"
        errors.append(f"{where}: {name} shards the model over GPUs and this machine trains on "
                      f"{policy.device}; use --accelerate-config ddp (on a CPU: DDP over gloo), "
                      "or run it where the GPUs are.")
    if kind == "MULTI_GPU" and options.num_processes < 2:
        errors.append(f"{where}: DDP needs at least 2 processes (got --num-processes "
                      f"{options.num_processes}); give --num-processes 2 or more, or train "
                      "without --launcher accelerate.")
    local = options.num_processes // max(1, options.num_machines)
    if policy.device == "cuda" and local > gpu_count():
        errors.append(f"--num-processes {options.num_processes}: this machine has "
                      f"{gpu_count()} GPU(s) for its {local} process(es); give at most "
                      f"{gpu_count() * options.num_machines}.")
    errors += _quantized_problems(options, config, policy, kind, file, where)
    errors += _precision_problems(config, policy, file, where)
    if kind == "FSDP" and config.quantized and policy.device == "cuda":
        from engine.training.shared import optimizer_name

        if optimizer_name(config, policy.device) == "paged_adamw_8bit":
            warnings.append(f"{where}: PEFT's FSDP-QLoRA guide reports that paged_adamw_8bit "
                            "fails when a checkpoint is saved (save_every, stop); "
                            "optimizer=adamw_torch avoids it, for more GPU memory.")
    if policy.device == "cpu" and options.num_processes > 1:
        warnings.append(f"{options.num_processes} processes share this machine's CPU cores: "
                        "that checks a multi-process setup, it does not train faster.")
    if config.method not in ("full", "lora", "qlora", "dora", "auto") \
            and options.num_processes > 1:
        warnings.append(f"method {config.method} on {options.num_processes} processes is not "
                        "verified here (the SFT methods are, on CPU over gloo).")
    return errors, warnings


def _quantized_problems(options: LaunchOptions, config: TrainConfig, policy: Any, kind: str,
                        file: dict[str, Any], where: str) -> list[str]:
    """QLoRA on several GPUs: each rank loads its 4-bit weights onto its own GPU
    (`models.load_kwargs`, LOCAL_RANK); FSDP and ZeRO-3 also need them stored in the compute
    dtype, so they shard with the other parameters. The loader stores them so; a loader that
    did not would be refused here, before minutes of loading."""
    if not config.quantized or options.num_processes < 2 or policy.device != "cuda":
        return []
    zero3 = kind == "DEEPSPEED" and int((file.get("deepspeed_config") or {}).get(
        "zero_stage", 0) or 0) == 3
    if kind != "FSDP" and not zero3:
        return []
    from engine import models

    qconfig = models.quantization_config("4bit", policy, config.quant_type, config.double_quant)
    storage = getattr(qconfig, "bnb_4bit_quant_storage", None)
    if storage is not None and getattr(storage, "is_floating_point", False):
        return []
    name = "FSDP" if kind == "FSDP" else "ZeRO-3"
    return [f"{where}: {name} with QLoRA needs the 4-bit weights stored in the compute dtype "
            f"(bnb_4bit_quant_storage={policy.dtype_name}) so they shard with the other "
            f"parameters; the loader stores them as {storage} here. Use DDP "
            "(--accelerate-config ddp) or method=lora."]


def _precision_problems(config: TrainConfig, policy: Any, file: dict[str, Any],
                        where: str) -> list[str]:
    mixed = str(file.get("mixed_precision") or "no").lower()
    if mixed == "no":
        return []
    from engine.training.shared import mixed_precision

    precision, _ = mixed_precision(config, policy.device, policy.dtype_name)
    if precision == mixed:
        return []
    return [f"{where}: mixed_precision: {mixed} there, but the run trains in {precision} "
            f"(precision: {config.precision} in the training config); accelerate's setting "
            "would win silently. Set mixed_precision: 'no' in the file (the training config "
            f"decides), or precision: {mixed} in the training config."]
