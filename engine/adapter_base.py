"""The base an adapter was trained against: recorded beside it, and loaded again wherever it is used.

An adapter only reproduces its training on the weights it was trained against. A QLoRA adapter
learned to correct nf4-rounded weights; on the full-precision weights its outputs differ
(docs/evaluation.md: the text_to_sql QLoRA adapter scores 16.7% on its 4-bit base, 0% on the
full-precision one). So the training runner writes ``tunedeck_base.json`` beside
``adapter_config.json``: the model reference, a fingerprint of the base weights, the
quantization and its settings. Everything that loads an adapter asks `plan_base` for that base,
says so in one line (`BasePlan.line`), loads it (`load_base`, or `ensure_base` to reuse a model
already loaded) and checks the loaded weights against the fingerprint (`check_loaded`).

Adapters older than the record: a run's adapter is inferred from its config.yaml (method qlora →
the 4-bit base with the config's quant settings); an adapter folder outside any run has an
unknown base, and the plan says so.

An explicit override (another quantization) is allowed and warns, naming the expected drop; a
base with other weights than the fingerprint is refused unless forced.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.adapters import AdapterInfo, AdapterSet, read_run_config, resolve
from engine.errors import ModelNotFound, TunedeckError
from engine.training.rundir import RunDir

RECORD_FILE = "tunedeck_base.json"
RECORD_VERSION = 1
QUANTIZE_CHOICES = ("none", "4bit", "8bit")  # what an override may ask for ("none": full precision)
QUANT_TYPES = ("nf4", "fp4")
EXTRAS_FINGERPRINT = "base_fingerprint"  # LoadedModel.extras key: computed once per loaded model
# The fingerprint reads this many evenly spaced chunks of each weight file (plus its end): ~1 MiB
# per file, milliseconds, yet any retrained or re-initialised weights change it.
_CHUNKS, _CHUNK = 16, 64 * 1024
QLORA_DROP = ("expect most of what it learned to be lost (the text_to_sql QLoRA adapter in "
              "docs/evaluation.md scores 16.7% execution accuracy on its 4-bit base, 0% on the "
              "full-precision one)")
ROUNDED_DROP = ("the adapter never saw weights rounded to {bits} bits: expect lower quality than "
                "on the {trained} base it was trained on")

Say = Callable[[str], None]


# --------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class BaseRecord:
    """The base an adapter was trained against."""

    model: str = ""  # the model reference training loaded (config.yaml's `model`)
    fingerprint: str | None = None  # `fingerprint()` of the base weights; None: not recorded
    quantization: str | None = None  # None (full precision) | "4bit" | "8bit"
    quant_type: str | None = None  # nf4 | fp4 (4-bit only)
    double_quant: bool | None = None  # 4-bit only
    compute_dtype: str | None = None  # the dtype the layers computed in (float32 on CPU)
    location: str = ""  # the folder the weights were read from
    source: str = "recorded"  # recorded | run config | unknown: where this knowledge came from

    @property
    def known(self) -> bool:
        return self.source != "unknown"

    def weights(self) -> str:
        return weights_label(self.quantization, self.quant_type)

    def describe(self) -> str:
        """E.g. "4-bit nf4 smollm2-135m-instruct"."""
        return f"{self.weights()} {model_name(self.model)}"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("source")
        return {"version": RECORD_VERSION, **data}


def weights_label(quantization: str | None, quant_type: str | None = None) -> str:
    if quantization == "4bit":
        return f"4-bit {quant_type or 'nf4'}"
    if quantization == "8bit":
        return "8-bit"
    return "full-precision"


def model_name(ref: str | None) -> str:
    from engine.models import DEFAULT_MODEL

    text = str(ref or DEFAULT_MODEL)
    return Path(text).name if ("/" in text and Path(text).expanduser().exists()) else text


def fingerprint(folder: str | Path) -> str | None:
    """A cheap fingerprint of a model folder's weights (None when it holds no weight files): each
    file's name and size and a sample of its bytes, spread over the whole file."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}\n".encode())
        with open(path, "rb") as fh:
            for offset in [size * i // _CHUNKS for i in range(_CHUNKS)] + [max(0, size - _CHUNK)]:
                fh.seek(offset)
                digest.update(fh.read(_CHUNK))
    return "sha256:" + digest.hexdigest()[:16]


def loaded_fingerprint(loaded: Any) -> str | None:
    """The fingerprint of the folder a loaded model came from (computed once per model)."""
    extras = getattr(loaded, "extras", None)
    if extras is not None and EXTRAS_FINGERPRINT in extras:
        return extras[EXTRAS_FINGERPRINT]
    location = str(getattr(getattr(loaded, "info", None), "location", "") or "")
    found = fingerprint(location) if location else None
    if extras is not None:
        extras[EXTRAS_FINGERPRINT] = found
    return found


def loaded_quant(loaded: Any) -> tuple[str | None, str | None, bool | None]:
    """(quantization, quant type, double quant) of a loaded model, read from the bitsandbytes
    config transformers keeps on the model."""
    quantization = getattr(getattr(loaded, "info", None), "quantization", None)
    if quantization != "4bit":
        return quantization, None, None
    config = getattr(getattr(getattr(loaded, "model", None), "config", None),
                     "quantization_config", None)

    def get(key: str) -> Any:
        return config.get(key) if isinstance(config, dict) else getattr(config, key, None)

    return "4bit", str(get("bnb_4bit_quant_type") or "nf4"), bool(get("bnb_4bit_use_double_quant"))


def record_for(model_ref: str, loaded: Any) -> BaseRecord:
    """The record of the base a trainer is about to train on (what was really loaded)."""
    quantization, quant_type, double_quant = loaded_quant(loaded)
    info = loaded.info
    return BaseRecord(model=str(model_ref or info.ref), fingerprint=loaded_fingerprint(loaded),
                      quantization=quantization, quant_type=quant_type,
                      double_quant=double_quant, compute_dtype=str(info.dtype),
                      location=str(info.location))


def write_record(folder: str | Path, record: BaseRecord) -> Path:
    """Write the record into `folder` (atomically: a reader never sees half of it)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RECORD_FILE
    tmp = folder / f".{RECORD_FILE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(record.as_dict(), indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def parse_record(path: Path) -> BaseRecord:
    """A record file → `BaseRecord`, or a `TunedeckError` naming the file, field and fix."""
    fix = ("Fix it, or delete it to fall back to the run's config.yaml (the base is then "
           "inferred).")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise TunedeckError(f"{path}: cannot read ({err.strerror or err}).") from None
    except UnicodeDecodeError:
        raise TunedeckError(f"{path}: not UTF-8 text. {fix}") from None
    except ValueError as err:
        raise TunedeckError(f"{path} line {err.lineno}: not valid JSON ({err.msg}). {fix}") from None
    if not isinstance(data, dict):
        raise TunedeckError(f"{path}: expected a JSON object with the base model's fields. {fix}")

    def bad(name: str, want: str) -> TunedeckError:
        return TunedeckError(f"{path}: field {name} is {data.get(name)!r}; it must be {want}. "
                             f"{fix}")

    if not isinstance(data.get("model"), str) or not data["model"].strip():
        raise bad("model", "the model reference the adapter was trained on")
    if data.get("quantization") not in (None, "4bit", "8bit"):
        raise bad("quantization", 'null, "4bit" or "8bit"')
    if data.get("quant_type") not in (None, *QUANT_TYPES):
        raise bad("quant_type", 'null, "nf4" or "fp4"')
    for name in ("fingerprint", "compute_dtype", "location"):
        if data.get(name) is not None and not isinstance(data[name], str):
            raise bad(name, "a string or null")
    if data.get("double_quant") not in (None, True, False):
        raise bad("double_quant", "true, false or null")
    four = data.get("quantization") == "4bit"
    return BaseRecord(
        model=data["model"], fingerprint=data.get("fingerprint"),
        quantization=data.get("quantization"),
        quant_type=(data.get("quant_type") or "nf4") if four else None,
        double_quant=(data.get("double_quant") is not False) if four else None,
        compute_dtype=data.get("compute_dtype"), location=data.get("location") or "",
        source="recorded")


def _run_of(info: AdapterInfo) -> RunDir | None:
    if info.kind == "final":
        return RunDir(info.path.parent)
    if info.kind == "checkpoint":
        return RunDir(info.path.parent.parent)
    return None


def from_run_config(config: dict[str, Any], fallback_model: str = "") -> BaseRecord:
    """What an older run trained on, from its config.yaml: the 4-bit base for QLoRA (with the
    config's quant settings), the model in full precision otherwise (preference training always
    loaded the full-precision base)."""
    model = str(config.get("model") or fallback_model)
    if str(config.get("method") or "") == "qlora":
        quant_type = str(config.get("quant_type") or "nf4")
        return BaseRecord(model=model, quantization="4bit",
                          quant_type=quant_type if quant_type in QUANT_TYPES else "nf4",
                          double_quant=config.get("double_quant") is not False,
                          source="run config")
    return BaseRecord(model=model, source="run config")


def read_record(adapter: str | Path | AdapterInfo) -> BaseRecord:
    """The base an adapter was trained on: its own record, else its run's (checkpoints share
    it), else inferred from the run's config.yaml, else unknown (PEFT's base name, if any)."""
    info = resolve(adapter)
    run = _run_of(info)
    for folder in (info.path, run.path if run else None):
        if folder is not None and (folder / RECORD_FILE).is_file():
            return parse_record(folder / RECORD_FILE)
    if run is not None:
        config = read_run_config(run)
        if config.get("model") or config.get("method"):
            return from_run_config(config, info.base_model)
    return BaseRecord(model=info.base_model, source="unknown")


# --------------------------------------------------------------------------- the plan


@dataclass
class BasePlan:
    """Which base to load for an adapter, and what to tell the user about it."""

    adapter: AdapterInfo
    record: BaseRecord
    model: str | None  # the reference to load (None: the default model)
    quantization: str | None
    quant_type: str = "nf4"
    double_quant: bool = True
    force: bool = False  # use a base whose weights differ from the record's fingerprint
    force_hint: str = ", or pass --force-base to use this one anyway"  # how to force, in errors
    line: str = ""  # the one line that says which base is loaded
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"{weights_label(self.quantization, self.quant_type)} {model_name(self.model)}"

    def load_kwargs(self) -> dict[str, Any]:
        return {"quantize": self.quantization, "quant_type": self.quant_type,
                "double_quant": self.double_quant}


def _drop(record: BaseRecord, quantization: str | None) -> str:
    if record.quantization == "4bit" and quantization is None:
        return QLORA_DROP
    if quantization in ("4bit", "8bit"):
        return ROUNDED_DROP.format(bits=quantization[0], trained=record.weights())
    return f"its outputs will differ from training on the {record.weights()} base"


def plan_base(adapter: str | Path | AdapterInfo, *, model: str | None = None,
              quantize: str | None = None, force: bool = False,
              device: str | None = None) -> BasePlan:
    """The base to load for `adapter`: the one it was trained against, unless `model` or
    `quantize` ("none" | "4bit" | "8bit") override it (an override warns, naming the drop)."""
    from engine import models

    info = resolve(adapter)
    record = read_record(info)
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise TunedeckError(f"quantize: {quantize!r} is not one of {', '.join(QUANTIZE_CHOICES)}"
                            " (none: the full-precision base).")
    chosen = model or record.model or None
    quant_type = record.quant_type or "nf4"
    double_quant = record.double_quant is not False
    warnings: list[str] = []
    if quantize is None:
        quantization = record.quantization
    else:
        quantization = None if quantize == "none" else quantize
        if record.known and quantization != record.quantization:
            warnings.append(
                f"{info.label} was trained on the {record.weights()} base; loading it on the "
                f"{weights_label(quantization, quant_type)} base instead, as asked: "
                f"{_drop(record, quantization)}.")
    if quantization == "4bit":
        works, why = models.probe_4bit(device)
        if not works and quantize is not None:
            raise TunedeckError(f"4-bit is not available here ({why}). Leave out the 4-bit "
                                "override, or install a bitsandbytes that supports this device.")
        if not works:
            quantization = None
            warnings.append(
                f"4-bit is not available here ({why}), so {info.label} runs on the "
                f"full-precision base, not the {record.weights()} one it was trained on: "
                f"{_drop(record, None)}.")
    plan = BasePlan(info, record, chosen, quantization, quant_type, double_quant, force,
                    warnings=warnings)
    plan.line = _line(plan, overridden=bool(warnings) or bool(model and model != record.model))
    return plan


def _line(plan: BasePlan, overridden: bool) -> str:
    record, label = plan.record, plan.adapter.label
    if not record.known:
        hint = (" If it was trained on a 4-bit base, ask for 4-bit (--quantize 4bit)."
                if plan.quantization is None else "")
        return (f"adapter {label}: the base it was trained on is not recorded (no {RECORD_FILE}, "
                f"not in a run); loading {plan.describe()}.{hint}")
    line = f"adapter {label} trained on {record.describe()}; loading "
    line += f"{plan.describe()} instead" if overridden else "that base"
    return line


# --------------------------------------------------------------------------- loading and checking


def check_loaded(plan: BasePlan, loaded: Any) -> list[str]:
    """Warnings about the loaded base; a `TunedeckError` when its weights differ from the
    record's fingerprint (unless the plan is forced)."""
    record, label = plan.record, plan.adapter.label
    info = getattr(loaded, "info", None)
    if info is None:
        return []
    if record.fingerprint:
        have = loaded_fingerprint(loaded)
        if have and have != record.fingerprint:
            what = (f"{label} was trained on {model_name(record.model)} with weights "
                    f"{record.fingerprint}; {info.name} ({info.location}) has other weights "
                    f"({have}).")
            if not plan.force:
                raise TunedeckError(
                    f"{what} Load the base it was trained on ({record.location or record.model})"
                    f"{plan.force_hint}.")
            return [f"{what} Used anyway, as forced: expect outputs unlike training."]
        return []
    note = base_mismatch(plan.adapter, loaded)
    return [note] if note else []


def base_mismatch(adapter: AdapterInfo, loaded: Any) -> str | None:
    """For an adapter without a fingerprint: a warning when the loaded model is reached by
    another reference than the one it was trained on, else None. Only a warning: one model has
    several references (the default model's name, its cache folder)."""
    record_model = adapter.base_model
    if not record_model:
        return None
    wanted = _model_location(record_model)
    have = {str(getattr(loaded.info, "location", "")), str(getattr(loaded.info, "ref", ""))}
    if wanted in have or record_model in have:
        return None
    return (f"{adapter.label} was trained on {record_model}; the active model is "
            f"{loaded.info.name}. Its output may be meaningless.")


def _model_location(ref: str) -> str:
    from engine import models

    try:
        source = models.resolve(ref)
    except TunedeckError:
        return ref
    if source.needs_conversion:
        return str(models.cache_dir_for(source))
    return str(source.path) if source.path else source.ref


def matches(plan: BasePlan, loaded: Any) -> bool:
    """Whether an already loaded model is the base the plan asks for (same quantization and
    settings; same weights by fingerprint, or by location where none was recorded)."""
    if loaded is None or getattr(loaded, "info", None) is None:
        return False
    quantization, quant_type, double_quant = loaded_quant(loaded)
    if quantization != plan.quantization:
        return False
    if not plan.record.known:  # nothing to compare with: the model at hand, as before records
        return True
    if quantization == "4bit" and (quant_type, double_quant) != (plan.quant_type,
                                                                 plan.double_quant):
        return False
    if plan.record.fingerprint:
        return loaded_fingerprint(loaded) == plan.record.fingerprint
    wanted = _model_location(plan.model) if plan.model else None
    if wanted is None:
        from engine.models import DEFAULT_MODEL

        wanted = _model_location(DEFAULT_MODEL)
    return wanted in (str(loaded.info.location), str(loaded.info.ref))


def load_base(plan: BasePlan, device: str | None = None, progress: Say | None = None) -> Any:
    """Load the plan's base and check it (`check_loaded`); returns the LoadedModel with the
    warnings in ``loaded.extras["base_warnings"]``."""
    from engine import models

    try:
        loaded = models.load(plan.model, device=device, progress=progress, **plan.load_kwargs())
    except ModelNotFound as err:
        if plan.model and plan.model != plan.record.model:
            raise TunedeckError(f"{plan.adapter.label}: the base given for it, {plan.model}, is "
                                f"not here: {err}") from None
        raise TunedeckError(
            f"{plan.adapter.label} was trained on {plan.record.model or plan.model}, which is "
            f"not here: {err} Give the base it was trained on with --model (its weights are "
            "checked against the adapter's record).") from None
    extras = getattr(loaded, "extras", None)
    warnings = check_loaded(plan, loaded)
    if extras is not None:
        extras["base_warnings"] = warnings
    return loaded


def ensure_base(adapter: str | Path | AdapterInfo, loaded: Any = None, *,
                model: str | None = None, quantize: str | None = None, force: bool = False,
                device: str | None = None, progress: Say | None = None,
                ) -> tuple[Any, BasePlan, list[str]]:
    """(model to put the adapter on, plan, warnings): `loaded` itself when it is the base the
    adapter needs, else that base loaded anew."""
    plan = plan_base(adapter, model=model, quantize=quantize, force=force, device=device)
    if matches(plan, loaded):
        if progress:
            progress(plan.line)
        return loaded, plan, [*plan.warnings, *check_loaded(plan, loaded)]
    if progress:
        progress(plan.line + "…")
    fresh = load_base(plan, device=device, progress=progress)
    return fresh, plan, [*plan.warnings, *fresh.extras.get("base_warnings", [])]


def load_with_adapter(model: str | None, adapter: str | Path | AdapterInfo | None,
                      progress: Say | None = None, warn: Say | None = None, *,
                      quantize: str | None = None, force: bool = False,
                      note: Say | None = None, device: str | None = None) -> Any:
    """`engine.models.load` plus an active adapter, on the base it was trained against (`model`
    and `quantize` override it). `note` gets the one line saying which base, `warn` the rest."""
    from engine import models

    if not adapter:
        return models.load(model, quantize=None if quantize in (None, "none") else quantize,
                           device=device, progress=progress)
    plan = plan_base(adapter, model=model, quantize=quantize, force=force, device=device)
    (note or progress or (lambda _t: None))(plan.line)
    loaded = load_base(plan, device=device, progress=progress)
    for text in [*plan.warnings, *loaded.extras.get("base_warnings", [])]:
        if warn is not None:
            warn(text)
    AdapterSet.of(loaded).attach(plan.adapter)
    return loaded


def describe_active(loaded: Any) -> str | None:
    """One line for a screen that uses the active adapter (Rate A/B): which adapter, on which
    base, and whether that is the base it was trained on. None when no adapter is active."""
    from engine.adapters import EXTRAS_KEY

    adapters = loaded.extras.get(EXTRAS_KEY) if loaded is not None else None
    info = adapters.active_info if adapters is not None else None
    if info is None:
        return None
    quantization, quant_type, double_quant = loaded_quant(loaded)
    have = f"adapter {info.label} on {weights_label(quantization, quant_type)} {loaded.info.name}"
    try:
        record = read_record(info)
    except TunedeckError:
        return f"{have} (its base record is unreadable)"
    if not record.known:
        return f"{have} (the base it was trained on is not recorded)"
    same = (quantization == record.quantization
            and (quantization != "4bit"
                 or (quant_type, double_quant) == (record.quant_type, record.double_quant))
            and (not record.fingerprint or loaded_fingerprint(loaded) == record.fingerprint))
    if same:
        return f"{have}, the base it was trained on"
    return f"{have}; it was trained on {record.describe()}: {_drop(record, quantization)}"
