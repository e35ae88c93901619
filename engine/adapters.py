"""Trained adapters: find them in run directories, put them on a loaded model, switch between them.

An adapter reference is one of:

- ``RUN_ID`` (or a unique part of it): the run's final adapter, ``runs/<id>/adapter``;
- ``RUN_ID:checkpoint-N``, ``RUN_ID:N`` or ``RUN_ID:latest``: a checkpoint of the run;
- a folder holding ``adapter_config.json`` (an exported adapter, a checkpoint, anything PEFT saved).

`AdapterSet` keeps one PEFT wrapper per loaded model. Each adapter is read from disk once, under
its own adapter name; switching is PEFT's ``set_adapter`` and the base model is the same weights
with the adapter layers disabled, so nothing is reloaded and going back to the base is exact.
PEFT injects its layers into the base model in place: a `engine.generation.Generator` built on
``loaded.model`` generates with whatever adapter is active, and must drop its prefix KV cache
after a switch (`AdapterSet.revision` changes; `compare` does it).

Which base model an adapter belongs on (and loading it) is `engine.adapter_base`.
Heavy libraries are imported inside functions: importing this module costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import TunedeckError, first_line
from engine.training.rundir import RunDir, list_runs, open_run

ADAPTER_CONFIG = "adapter_config.json"
NEWEST = "newest:"  # newest:NAME, the newest finished run named NAME
_UNSEEN = object()  # "no value given" / "never seen", where None means the base model
EXTRAS_KEY = "adapters"  # where a LoadedModel keeps its AdapterSet (LoadedModel.extras)
_LORA_KEY = re.compile(r"^base_model\.model\.(.+)\.lora_([AB])\.weight$")


# --------------------------------------------------------------------------- finding adapters


@dataclass(frozen=True)
class AdapterInfo:
    """One adapter on disk and where it came from."""

    ref: str  # what a user types to get it back: RUN_ID, RUN_ID:checkpoint-N or a path
    path: Path  # the folder with adapter_config.json
    kind: str  # "final" | "checkpoint" | "folder"
    run_id: str | None = None
    step: int | None = None
    base_model: str = ""  # the model the adapter was trained on (the run's config, else PEFT's)
    method: str = ""  # lora | qlora | dora, from the run's config
    state: str = ""  # the run's state (done, stopped, running, ...)
    template: str = ""  # the prompt template it trained with (the run's `template`; "" default)

    @property
    def label(self) -> str:
        if self.kind == "final":
            return f"{self.run_id} (final)"
        if self.kind == "checkpoint":
            return f"{self.run_id} @ step {self.step}"
        return str(self.path)

    @property
    def name(self) -> str:
        """The PEFT adapter name: unique per folder, a valid module key (no dots)."""
        if self.kind == "final" and self.run_id:
            raw = self.run_id
        elif self.kind == "checkpoint" and self.run_id:
            raw = f"{self.run_id}-step{self.step}"
        else:
            digest = hashlib.sha1(str(self.path).encode()).hexdigest()[:6]
            raw = f"{self.path.name}-{digest}"
        return re.sub(r"[^A-Za-z0-9_-]+", "-", raw)


def is_adapter_folder(path: Path) -> bool:
    return (path / ADAPTER_CONFIG).is_file()


def read_run_config(run: RunDir) -> dict[str, Any]:
    """The run's config.yaml as a plain mapping ({} when missing or unreadable).

    Read as YAML rather than through `TrainConfig`, so runs written by an older or newer version
    of the config still list and export."""
    import yaml

    try:
        data = yaml.safe_load(run.config_path.read_text(encoding="utf-8"))
    except Exception:  # also bad UTF-8, an impossible date, nesting past the recursion limit:
        # the config only informs, so no broken file may stop a run being listed, viewed, exported
        return {}
    return data if isinstance(data, dict) else {}


def _peft_base(folder: Path) -> str:
    try:
        return str(json.loads((folder / ADAPTER_CONFIG).read_text()).get(
            "base_model_name_or_path") or "")
    except (OSError, ValueError):
        return ""


def _step_of(checkpoint: Path) -> int | None:
    tail = checkpoint.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def run_adapters(run: RunDir) -> list[AdapterInfo]:
    """A run's adapters: the final one first, then its complete checkpoints, newest first (one
    cut short by a full disk or a kill mid-save holds a partial adapter: never offered)."""
    config = read_run_config(run)
    base = str(config.get("model") or "")
    method = str(config.get("method") or "")
    template = str(config.get("template") or "")
    state = run.state()
    found: list[AdapterInfo] = []
    if is_adapter_folder(run.adapter_dir):
        found.append(AdapterInfo(ref=run.id, path=run.adapter_dir, kind="final", run_id=run.id,
                                 base_model=base or _peft_base(run.adapter_dir), method=method,
                                 state=state, template=template))
    for checkpoint in reversed(run.complete_checkpoints()):
        if is_adapter_folder(checkpoint):
            found.append(AdapterInfo(
                ref=f"{run.id}:{checkpoint.name}", path=checkpoint, kind="checkpoint",
                run_id=run.id, step=_step_of(checkpoint),
                base_model=base or _peft_base(checkpoint), method=method, state=state,
                template=template))
    return found


def list_available() -> list[AdapterInfo]:
    """Every finished or checkpointed adapter under the data home, newest run first."""
    found: list[AdapterInfo] = []
    for run in list_runs():
        found.extend(run_adapters(run))
    return found


def _folder_info(folder: Path) -> AdapterInfo:
    """An adapter folder given by path; if it lies in a run directory, say which."""
    folder = folder.resolve()
    run_path = None
    kind, step = "folder", None
    if folder.name == "adapter" and (folder.parent / "config.yaml").is_file():
        run_path, kind = folder.parent, "final"
    elif folder.parent.name == "checkpoints" and (folder.parent.parent / "config.yaml").is_file():
        run_path, kind, step = folder.parent.parent, "checkpoint", _step_of(folder)
    if run_path is None:
        return AdapterInfo(ref=str(folder), path=folder, kind="folder",
                           base_model=_peft_base(folder))
    run = RunDir(run_path)
    config = read_run_config(run)
    ref = run.id if kind == "final" else f"{run.id}:{folder.name}"
    return AdapterInfo(ref=ref, path=folder, kind=kind, run_id=run.id, step=step,
                       base_model=str(config.get("model") or _peft_base(folder)),
                       method=str(config.get("method") or ""), state=run.state(),
                       template=str(config.get("template") or ""))


def resolve(ref: str | Path | AdapterInfo) -> AdapterInfo:
    """An adapter reference → the adapter on disk, or a `TunedeckError` saying what exists."""
    if isinstance(ref, AdapterInfo):
        return ref
    text = str(ref).strip()
    if not text:
        raise TunedeckError("No adapter given: use RUN_ID, RUN_ID:checkpoint-N or a folder with "
                            f"{ADAPTER_CONFIG}. `tunedeck runs` lists the runs.")
    path = Path(text).expanduser()
    if path.is_dir():
        if is_adapter_folder(path):
            return _folder_info(path)
        if (path / "config.yaml").is_file() or (path / "status.json").is_file():
            return _pick(RunDir(path.resolve()), None, text)
        raise TunedeckError(f"{text}: this folder has no {ADAPTER_CONFIG}, so it is not a PEFT "
                            "adapter. Give the folder PEFT saved, or a run id.")
    if text.startswith(NEWEST):
        return _newest_named(text[len(NEWEST):].strip(), text)
    run_part, sep, which = text.partition(":")
    if sep and not which:
        raise TunedeckError(f"{text}: after ':' give a checkpoint, e.g. {run_part}:checkpoint-20 "
                            f"or {run_part}:latest.")
    return _pick(open_run(run_part), which or None, text)


def _newest_named(name: str, text: str) -> AdapterInfo:
    """`newest:NAME`: the final adapter of the newest finished run named NAME (its config's
    `name`), so a shipped config can start from the run another shipped config makes."""
    from engine.training.rundir import list_runs

    for run in list_runs():
        if str(read_run_config(run).get("name") or "") != name:
            continue
        final = [a for a in run_adapters(run) if a.kind == "final"]
        if final:
            return final[0]
    raise TunedeckError(f"{text}: no finished run named {name!r} has an adapter yet; train one "
                        f"first (a config with `name: {name}`, e.g. tunedeck train "
                        f"configs/{name}.yaml), or give a run id.")


def _pick(run: RunDir, which: str | None, text: str) -> AdapterInfo:
    adapters = run_adapters(run)
    checkpoints = [a for a in adapters if a.kind == "checkpoint"]
    names = ", ".join(f"{run.id}:{a.path.name}" for a in checkpoints) or "none"
    if which is None:
        final = [a for a in adapters if a.kind == "final"]
        if final:
            return final[0]
        hint = (f" Its checkpoints: {names} (use RUN_ID:latest for the newest)."
                if checkpoints else "")
        if read_run_config(run).get("method") == "full":
            raise TunedeckError(f"{run.id} is a full fine-tune: it has no adapter, its weights "
                                f"are a whole model already. Use it with --model {run.path / 'model'}.")
        raise TunedeckError(f"{run.id}: this run ({run.state()}) has no final adapter yet.{hint}")
    if which == "latest":
        if checkpoints:
            return checkpoints[0]
        raise TunedeckError(f"{run.id} has no checkpoints with an adapter "
                            "(set save_every in the run's config to keep some).")
    step = which.removeprefix("checkpoint-")
    for adapter in checkpoints:
        if step.isdigit() and adapter.step == int(step):
            return adapter
    cut = [p.name for p in run.cut_checkpoints() if step.isdigit() and _step_of(p) == int(step)]
    if cut:
        raise TunedeckError(f"{text}: {cut[0]} was cut short (a full disk or a kill while it was "
                            f"saved) and holds no whole adapter. Complete checkpoints of "
                            f"{run.id}: {names}.")
    raise TunedeckError(f"{text}: no such checkpoint. Checkpoints of {run.id}: {names}.")


# --------------------------------------------------------------------------- switching


class AdapterSet:
    """The adapters attached to one loaded model, and which one is active (None: the base).

    Use `AdapterSet.of(loaded)`: there is one per loaded model, kept in ``loaded.extras``.
    """

    def __init__(self, loaded: Any) -> None:
        self.loaded = loaded
        self.peft: Any = None  # the PeftModel wrapping loaded.model, after the first attach
        self.attached: dict[str, AdapterInfo] = {}
        self._active: str | None = None
        self.revision = 0  # bumped whenever the effective weights change
        self._lock = threading.RLock()
        # generator → the adapter its prefix cache was computed with
        self._cache_keys: weakref.WeakKeyDictionary[Any, str | None] = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, loaded: Any) -> AdapterSet:
        found = loaded.extras.get(EXTRAS_KEY)
        if found is None:
            found = loaded.extras[EXTRAS_KEY] = cls(loaded)
        return found

    @property
    def active(self) -> str | None:
        return self._active

    @property
    def active_info(self) -> AdapterInfo | None:
        return self.attached.get(self._active) if self._active else None

    def describe(self) -> str:
        """What is active, for a status line: "base" or the adapter's label."""
        info = self.active_info
        return info.label if info else "base"

    def sync_cache(self, generator: Any) -> None:
        """Drop a generator's prefix KV cache if it was filled under another adapter: cached
        keys and values depend on the adapter's weights."""
        with self._lock:
            if self._cache_keys.get(generator, _UNSEEN) != self._active:
                generator.clear_cache()
                self._cache_keys[generator] = self._active

    def bind(self, generator: Any, name: Any = _UNSEEN) -> AdapterGenerator:
        """`generator` bound to adapter `name` (None: the base; default: the one active now)."""
        return AdapterGenerator(self, generator, self._active if name is _UNSEEN else name)

    @staticmethod
    def list_available() -> list[AdapterInfo]:
        return list_available()

    def attach(self, adapter: str | Path | AdapterInfo, activate: bool = True) -> str:
        """Load an adapter from disk (once: attaching it again only looks it up) and return its
        name. It becomes the active one unless ``activate=False``."""
        info = resolve(adapter)
        with self._lock:
            name = info.name
            if name not in self.attached:
                self._load(info, name)
                self.attached[name] = info
            if activate:
                self.activate(name)
            else:
                # Loading a further adapter leaves PEFT's active one as it was, but a first
                # attach turns the layers on: put back what the caller had.
                self._apply(self._active)
        return name

    def _load(self, info: AdapterInfo, name: str) -> None:
        from engine.models import _quiet_transformers

        _quiet_transformers()
        from peft import PeftModel

        from engine.notices import peft_wrapping

        self._check_fits(info)
        try:
            with peft_wrapping():  # PEFT's read of a deprecated transformers alias (engine.notices)
                if self.peft is None:
                    self.peft = PeftModel.from_pretrained(self.loaded.model, str(info.path),
                                                          adapter_name=name, is_trainable=False)
                else:
                    self.peft.load_adapter(str(info.path), adapter_name=name,
                                           is_trainable=False)
        except (ValueError, RuntimeError, KeyError, OSError) as err:
            raise TunedeckError(
                f"Could not put adapter {info.label} on {self.loaded.info.name}: "
                f"{type(err).__name__}: {first_line(err, 300)}. It was trained on "
                f"{info.base_model or 'another model'}; make that the active model first."
            ) from None
        self.peft.eval()

    def _check_fits(self, info: AdapterInfo) -> None:
        """Compare the adapter's tensors with the model's layers before PEFT touches the model:
        PEFT injects its layers first and loads the weights after, so a misfit found by PEFT
        would leave the shared model altered."""
        weights = info.path / "adapter_model.safetensors"
        if not weights.is_file():
            return
        from safetensors import safe_open

        modules = dict(self.loaded.model.named_modules())
        problem = None
        with safe_open(str(weights), framework="pt") as tensors:
            for key in tensors.keys():  # noqa: SIM118 - safe_open is not a mapping
                found = _LORA_KEY.match(key)
                if not found:
                    continue
                path, part = found.group(1), found.group(2)
                module = modules.get(path)
                if module is None:
                    problem = f"the model has no layer {path}"
                    break
                module = getattr(module, "base_layer", module)  # wrapped by an earlier adapter
                shape = tensors.get_slice(key).get_shape()
                want = getattr(module, "in_features" if part == "A" else "out_features", None)
                got = shape[1] if part == "A" else shape[0]
                if want is not None and want != got:
                    problem = f"layer {path} has {want} features, the adapter expects {got}"
                    break
        if problem:
            raise TunedeckError(
                f"Adapter {info.label} does not fit {self.loaded.info.name}: {problem}. It was "
                f"trained on {info.base_model or 'another model'}; make that the active model "
                "first.")

    def activate(self, name: str | None) -> None:
        """Make an attached adapter active, or the base model (None). Nothing is reloaded."""
        with self._lock:
            if name is not None and name not in self.attached:
                known = ", ".join(self.attached) or "none"
                raise TunedeckError(f"Adapter '{name}' is not attached (attached: {known}).")
            if name != self._active:
                self.revision += 1
            self._apply(name)
            self._active = name

    def _apply(self, name: str | None) -> None:
        if self.peft is None:
            return
        if name is None:
            self.peft.base_model.disable_adapter_layers()
        else:
            self.peft.set_adapter(name, inference_mode=True)
            self.peft.base_model.enable_adapter_layers()

    @contextmanager
    def using(self, name: str | None) -> Iterator[None]:
        """Temporarily activate `name` (None: the base), then restore what was active."""
        with self._lock:
            previous = self._active
            self.activate(name)
            try:
                yield
            finally:
                self.activate(previous)

    def detach(self, name: str) -> None:
        """Forget one adapter (its weights are freed). The base becomes active if it was."""
        with self._lock:
            if name not in self.attached:
                return
            if self._active == name:
                self.activate(None)
            del self.attached[name]
            if not self.attached:
                self.unload()
                return
            self.peft.delete_adapter(name)
            self._apply(self._active)

    def unload(self) -> None:
        """Take every adapter layer out of the model: ``loaded.model`` is the plain base again."""
        with self._lock:
            if self.peft is not None:
                self.peft.unload()
                self.peft = None
            self.attached.clear()
            if self._active is not None:
                self.revision += 1
            self._active = None


def attach(loaded: Any, adapter: str | Path | AdapterInfo, activate: bool = True) -> str:
    """Shorthand: `AdapterSet.of(loaded).attach(adapter)`."""
    return AdapterSet.of(loaded).attach(adapter, activate=activate)


def active_ref(loaded: Any) -> str | None:
    """The reference of the adapter active on a loaded model (None: the base), for records such
    as the store's ``adapter`` column."""
    found = loaded.extras.get(EXTRAS_KEY) if loaded is not None else None
    info = found.active_info if found is not None else None
    return info.ref if info else None


# --------------------------------------------------------------------------- generating


class AdapterGenerator:
    """An `engine.generation.Generator` that always generates with one adapter active (None:
    the base model), whatever is active elsewhere; same ``generate`` signature.

    The adapter set's lock is held for the whole generation, so an attach or a switch from
    another thread waits for it instead of changing weights under it. The generator's prefix KV
    cache is dropped only when the adapter differs from the one it was computed with.
    """

    def __init__(self, adapters: AdapterSet, generator: Any, name: str | None) -> None:
        self.adapters = adapters
        self.generator = generator
        self.name = name

    @property
    def adapter_ref(self) -> str | None:
        info = self.adapters.attached.get(self.name) if self.name else None
        return info.ref if info else None

    @property
    def label(self) -> str:
        info = self.adapters.attached.get(self.name) if self.name else None
        return info.label if info else "base"

    def generate(self, input_ids: list[int], params: Any, on_text: Any = None,
                 cancel: Any = None, prefix_len: int = 0) -> Any:
        with self.adapters.using(self.name):
            self.adapters.sync_cache(self.generator)
            return self.generator.generate(input_ids, params, on_text=on_text, cancel=cancel,
                                           prefix_len=prefix_len)


# --------------------------------------------------------------------------- comparing


def compare(loaded: Any, generator: Any, input_ids: list[int], params: Any,
            names: list[str | None], on_text: Callable[[str | None, str], None] | None = None,
            cancel: Any = None, prefix_len: int = 0) -> dict[str | None, Any]:
    """Generate from the same input with each of `names` (None: the base model), one after the
    other on the same weights; the active adapter is unchanged afterwards."""
    adapters = AdapterSet.of(loaded)
    results: dict[str | None, Any] = {}
    for name in names:
        if cancel is not None and cancel.is_set():
            break
        stream = (lambda delta, n=name: on_text(n, delta)) if on_text else None
        results[name] = AdapterGenerator(adapters, generator, name).generate(
            input_ids, params, on_text=stream, cancel=cancel, prefix_len=prefix_len)
    return results
