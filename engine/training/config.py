"""A training run's configuration: a dataclass that round-trips through YAML, with `key=value`
overrides from the command line (torchtune-style) and validation with messages a user can act on.

Nothing here imports torch; the one device check (4-bit available?) is imported lazily.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ConfigError

# The method names; engine/training/recipes.py maps each to its recipe (a test holds them equal).
SFT_METHODS = ("auto", "full", "lora", "qlora", "dora")
PREFERENCE_METHODS = ("dpo", "kto")
RL_METHODS = ("grpo",)
# Methods that always train a LoRA adapter, from the base or from an SFT adapter (`adapter:`).
ADAPTER_METHODS = PREFERENCE_METHODS + RL_METHODS
METHODS = SFT_METHODS + PREFERENCE_METHODS + RL_METHODS
QUANT_TYPES = ("nf4", "fp4")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
              "constant_with_warmup", "inverse_sqrt", "reduce_lr_on_plateau")
OPTIMIZERS = ("auto", "adamw_torch", "adamw_torch_fused", "paged_adamw_8bit", "adamw_8bit",
              "paged_adamw_32bit", "adafactor", "sgd")

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIGS_DIR = PROJECT_ROOT / "configs"
# Settings that are floating-point numbers: each must be finite (YAML reads .inf / .nan).
FLOAT_FIELDS = ("learning_rate", "lora_dropout", "warmup_ratio", "epochs", "beta", "temperature")
# Counts beyond this are typos, and overflow the 32-bit integers that torch and numpy use.
MAX_COUNT = 2**31 - 1
MAX_SEED = 2**32 - 1
MAX_LEARNING_RATE = 1.0  # no optimizer offered here trains at a rate above it
MAX_EPOCHS = 100_000


@dataclass
class TrainConfig:
    model: str = "smollm2-135m-instruct"
    dataset: str = "sample_data/text_to_sql"  # file or folder with train/validation/test.jsonl
    eval_dataset: str | None = None  # default: the folder's validation split
    mapping: dict[str, str] = field(default_factory=dict)  # column mapping {"question": "prompt"}
    method: str = "qlora"  # auto | full | lora | qlora | dora | dpo | kto (preference.py) | grpo;
    # auto: qlora on CUDA, lora elsewhere (method_fit.py), resolved when the run is created
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    quant_type: str = "nf4"
    double_quant: bool = True
    optimizer: str = "auto"  # auto → paged_adamw_8bit on CUDA, adamw_torch elsewhere
    learning_rate: float | None = None  # None: the method's (method_defaults.py)
    scheduler: str = "cosine"
    warmup_ratio: float = 0.05
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 8
    grad_accum: int = 1
    max_seq_len: int = 256
    packing: bool = False
    completion_only_loss: bool = True
    eval_every: int = 0
    sample_every: int = 0
    sample_k: int = 2
    save_every: int = 0
    seed: int = 42
    precision: str = "auto"  # auto | fp32 | bf16 | fp16: mixed precision of the training step
    name: str = ""
    limit: int | None = None  # first N train rows
    # A prompt-lab template the prompts are rendered with (default: instruction + input as one
    # user turn); recorded with the run, so evaluation prompts the adapter the same way.
    template: str | None = None
    eval_limit: int | None = None  # first N evaluation rows (evaluation costs time every eval_every)
    # Preference and RL training (dpo / kto: preference.py; grpo: grpo.py):
    adapter: str | None = None  # start from this SFT adapter (run id or adapter folder)
    beta: float | None = None  # how far the policy may move from the reference (None: the method's)
    # GRPO (engine/training/grpo.py): rewards {name or file.py:function: weight} (None: the
    # task's, engine/training/rewards.py), completions sampled per prompt, their length and
    # temperature (None: fitted to the data and device, grpo.fit_settings), and the SQL
    # rewards' database (None: the sample database).
    rewards: dict[str, float] | None = None
    num_generations: int | None = None
    max_completion_length: int | None = None
    temperature: float | None = None
    database: str | None = None
    # TensorBoard event files beside events.jsonl (on when the tensorboard package is installed)
    tensorboard: bool = True

    # ------------------------------------------------------------------ (de)serialising
    def __post_init__(self) -> None:
        from engine.training import method_defaults

        if self.learning_rate is None:
            self.learning_rate = method_defaults.learning_rate(self.method)
        if self.beta is None:
            self.beta = method_defaults.beta(self.method)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> TrainConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a mapping of settings, got {type(d).__name__}.")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = [k for k in d if k not in known]
        if unknown:
            raise ConfigError(
                f"{source}: unknown setting(s) {', '.join(map(repr, unknown))}. "
                f"Known settings: {', '.join(known)}."
            )
        hints = typing.get_type_hints(cls)
        values = {k: _coerce(k, v, hints[k], source) for k, v in d.items()}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        import yaml

        path = Path(path).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"{path}: cannot read the config ({err.strerror or err}).") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)}).") from None
        if data is None:  # an empty file (or only comments) would silently train the defaults
            raise ConfigError(
                f"{path}: the config is empty. Write the settings of the run, at least model, "
                "dataset and method (`tunedeck train` lists example configs to start from).")
        return cls.from_dict(data, source=str(path))

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def with_overrides(self, overrides: list[str]) -> TrainConfig:
        """A copy with ``key=value`` overrides applied (values parsed as YAML scalars)."""
        import yaml

        data = self.to_dict()
        for item in overrides:
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ConfigError(f"override {item!r}: write it as key=value, e.g. max_steps=20.")
            try:
                value = yaml.safe_load(raw) if raw.strip() else None
            except yaml.YAMLError:
                value = raw
            data[key] = value
        return type(self).from_dict(data, source="overrides")

    # ------------------------------------------------------------------ derived values
    @property
    def quantized(self) -> bool:
        return self.method == "qlora"

    @property
    def uses_peft(self) -> bool:
        return self.method in ("auto", "lora", "qlora", "dora")  # auto resolves to a PEFT one

    def _rl_problems(self, bad_float: list[str]) -> list[str]:
        from engine.training import rewards

        problems = []
        if "beta" not in bad_float and self.beta < 0:
            problems.append(f"beta: 0 (no KL term) or positive (got {self.beta}).")
        if self.num_generations is None:
            pass  # fitted to the batch (grpo.fit_settings)
        elif self.num_generations < 2:
            problems.append(f"num_generations: at least 2 (got {self.num_generations}): GRPO "
                            "compares each completion with the others of its prompt.")
        elif (self.batch_size * self.grad_accum) % self.num_generations:
            problems.append(
                f"batch_size: batch_size x grad_accum ({self.batch_size * self.grad_accum}) must "
                f"be a multiple of num_generations ({self.num_generations}): each step holds "
                "whole groups of completions; e.g. batch_size="
                f"{max(self.num_generations, self.batch_size // self.num_generations * self.num_generations)}.")
        if self.max_completion_length is not None and self.max_completion_length < 1:
            problems.append("max_completion_length: the most tokens a sampled completion may "
                            f"have, at least 1 (got {self.max_completion_length}).")
        if self.temperature is not None and "temperature" not in bad_float \
                and self.temperature <= 0:
            problems.append(f"temperature: must be positive to sample (got {self.temperature}); "
                            "0.7 to 1.0 keeps the completions of a prompt different.")
        if self.rewards is not None:
            problems += rewards.check_spec(self.rewards, base_dir=None)
        if self.database is not None and not Path(self.database).expanduser().is_file():
            problems.append(f"database: {self.database} is not a file; give the SQLite database "
                            "the SQL rewards run the queries on (or null for the sample one).")
        return problems

    def dataset_path(self) -> Path:
        return resolve_data_path(self.dataset)

    def eval_dataset_path(self) -> Path | None:
        return resolve_data_path(self.eval_dataset) if self.eval_dataset else None

    def resolved(self) -> TrainConfig:
        """Dataset paths made absolute and the starting adapter pinned to its folder, so the saved
        config reproduces from any directory, and later."""
        data = self.to_dict()
        data["dataset"] = str(self.dataset_path())
        if self.eval_dataset:
            data["eval_dataset"] = str(self.eval_dataset_path())
        if self.adapter and self.method in ADAPTER_METHODS:
            from engine.training.adapter_ref import resolve_adapter

            # The folder, not `newest:sql` or an id prefix: a resume starts from the same one.
            data["adapter"] = str(resolve_adapter(self.adapter))
        if self.rewards:
            from engine.training.rewards import pinned_key

            # A reward file relative to where `tunedeck train` ran: the runner runs elsewhere.
            data["rewards"] = {pinned_key(key): weight for key, weight in self.rewards.items()}
        return type(self).from_dict(data)

    # ------------------------------------------------------------------ validation
    def validate(self, device_checks: bool = True) -> None:
        """Raise `ConfigError` naming the field and the fix. `device_checks=False` skips the
        (slow: imports bitsandbytes) probe of 4-bit support on this machine."""
        problems: list[str] = []
        # A NaN compares false with everything, so the range checks below would let it through.
        bad_float = [name for name in FLOAT_FIELDS
                     if getattr(self, name) is not None and not math.isfinite(getattr(self, name))]
        for name in bad_float:
            problems.append(f"{name}: must be a finite number (got {getattr(self, name)}).")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if (isinstance(value, int) and not isinstance(value, bool) and f.name != "seed"
                    and abs(value) > MAX_COUNT):
                problems.append(f"{f.name}: {value} is out of range (at most {MAX_COUNT:,}).")
        if not 0 <= self.seed <= MAX_SEED:  # numpy's seeding takes 0 … 2**32-1, nothing else
            problems.append(f"seed: must be in 0 … {MAX_SEED} (got {self.seed}).")
        if self.method not in METHODS:
            problems.append(f"method: {self.method!r} is not one of {', '.join(METHODS)}.")
        elif self.method in PREFERENCE_METHODS and "beta" not in bad_float and self.beta <= 0:
            problems.append(f"beta: must be positive for {self.method} (got {self.beta}).")
        elif self.method in RL_METHODS:
            problems += self._rl_problems(bad_float)
        if self.method == "kto" and self.batch_size < 2:
            problems.append("batch_size: KTO needs at least 2 (its KL estimate pairs answers "
                            "within a batch); raise batch_size, lower grad_accum to compensate.")
        if self.quant_type not in QUANT_TYPES:
            problems.append(f"quant_type: {self.quant_type!r} must be nf4 or fp4.")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer: {self.optimizer!r} must be one of {', '.join(OPTIMIZERS)}.")
        if self.precision not in PRECISIONS:
            problems.append(f"precision: {self.precision!r} must be one of "
                            f"{', '.join(PRECISIONS)}.")
        if self.scheduler not in SCHEDULERS:
            problems.append(f"scheduler: {self.scheduler!r} must be one of {', '.join(SCHEDULERS)}.")
        for name in ("lora_r", "lora_alpha", "batch_size", "grad_accum", "max_seq_len", "sample_k"):
            if getattr(self, name) < 1:
                problems.append(f"{name}: must be at least 1 (got {getattr(self, name)}).")
        for name in ("eval_every", "sample_every", "save_every"):
            if getattr(self, name) < 0:
                problems.append(f"{name}: must be 0 (off) or a number of steps (got {getattr(self, name)}).")
        if "lora_dropout" not in bad_float and not 0 <= self.lora_dropout < 1:
            problems.append(f"lora_dropout: must be in [0, 1) (got {self.lora_dropout}).")
        if "warmup_ratio" not in bad_float and not 0 <= self.warmup_ratio < 1:
            problems.append(f"warmup_ratio: must be in [0, 1) (got {self.warmup_ratio}).")
        if "learning_rate" not in bad_float and not 0 < self.learning_rate <= MAX_LEARNING_RATE:
            problems.append(f"learning_rate: must be positive and at most {MAX_LEARNING_RATE:g} "
                            f"(got {self.learning_rate:g}); LoRA trains at about 1e-4 to 1e-3, "
                            "a full fine-tune at about 1e-5.")
        if self.max_steps == 0 or self.max_steps < -1:
            problems.append("max_steps: a positive number of steps, or -1 to train for `epochs`.")
        if "epochs" not in bad_float and self.max_steps == -1 and self.epochs <= 0:
            problems.append("epochs: must be positive when max_steps is -1.")
        if "epochs" not in bad_float and self.epochs > MAX_EPOCHS:
            problems.append(f"epochs: at most {MAX_EPOCHS:,} (got {self.epochs:g}); use "
                            "max_steps for a run measured in steps.")
        if self.limit is not None and self.limit < 1:
            problems.append(f"limit: a positive number of training rows or null (got {self.limit}).")
        if self.eval_limit is not None and self.eval_limit < 1:
            problems.append("eval_limit: a positive number of evaluation rows or null "
                            f"(got {self.eval_limit}).")
        if isinstance(self.target_modules, list) and not self.target_modules:
            problems.append("target_modules: give module names or 'all-linear'.")
        for key, value in self.mapping.items():
            if not isinstance(key, str) or not isinstance(value, str):
                problems.append(f"mapping: {key!r}: {value!r} must map a column name to a field name.")
        if self.template is not None:
            problems += _template_problems(self.template)
        try:
            self.dataset_path()
        except ConfigError as err:
            problems.append(str(err))
        if self.eval_dataset:
            try:
                self.eval_dataset_path()
            except ConfigError as err:
                problems.append(str(err))
        if self.adapter and self.method in ADAPTER_METHODS:
            from engine.training.adapter_ref import resolve_adapter

            try:
                resolve_adapter(self.adapter)
            except ConfigError as err:
                problems.append(str(err))
        if problems:
            raise ConfigError("Invalid training config:\n  - " + "\n  - ".join(problems))
        if device_checks and self.precision == "fp16":
            from engine import models

            if models.device_policy().device != "cuda":
                raise ConfigError("precision: fp16 mixed precision needs a CUDA GPU; use bf16 or "
                                  "fp32 (or auto) here.")
        if device_checks and self.method == "qlora":
            from engine import models

            ok, reason = models.probe_4bit()
            if not ok:
                raise ConfigError(
                    f"method: qlora needs 4-bit weights (bitsandbytes), which do not work on this "
                    f"device: {reason}. Use method=lora instead."
                )


def resolve_data_path(value: str) -> Path:
    """A dataset path as given, else relative to the project (where sample_data/ lives)."""
    path = Path(value).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, PROJECT_ROOT / path]
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    raise ConfigError(f"dataset: {value} does not exist (looked in {', '.join(map(str, candidates))}). "
                      "Give a .jsonl file or a folder with train.jsonl / validation.jsonl.")


def example_configs() -> list[Path]:
    """The example configs shipped with the project (configs/*.yaml)."""
    if not CONFIGS_DIR.is_dir():
        return []
    return sorted(CONFIGS_DIR.glob("*.yaml"))


# --------------------------------------------------------------------------- type coercion


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return origin.__name__
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any, source: str) -> Any:
    """Check `value` against the annotation; ints are accepted for floats (YAML writes 1 not 1.0)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner: ConfigError | None = None
        for arg in typing.get_args(tp):
            try:
                return _coerce(key, value, arg, source)
            except ConfigError as err:
                if f" {key}." in str(err):  # a mapping's entry is wrong: say which one
                    inner = err
        if inner is not None:
            raise inner
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 2e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key in ("name",):
            return str(value)
    elif origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        if isinstance(value, list):
            return [_coerce(key, v, item, source) for v in value]
    elif origin is dict:
        if isinstance(value, dict):
            _, item = typing.get_args(tp) or (str, str)
            if item is str:
                return {str(k): str(v) for k, v in value.items()}
            return {str(k): _coerce(f"{key}.{k}", v, item, source) for k, v in value.items()}
    elif tp is Any:
        return value
    raise ConfigError(
        f"{source}: {key} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})."
    )


def _template_problems(name: Any) -> list[str]:
    from engine.errors import TunedeckError
    from engine.templates import get_template

    if not isinstance(name, str) or not name.strip():
        return ["template: the name of a prompt template (see `tunedeck prompt --list-templates`), or null."]
    try:
        get_template(name)
    except TunedeckError as err:
        return [f"template: {err}"]
    return []

