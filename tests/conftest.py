"""Shared fixtures.

- Every test gets its own data home (``TUNEDECK_HOME``), so runs, templates and the database never
  leak between tests. The converted default model is shared across the session through a
  symlinked ``models/`` folder, so the one-time GGUF conversion happens once per test session.
- ``tiny_model_dir``: a randomly initialised 2-layer Llama with the default model's tokenizer and
  chat template, for fast mechanics (training loops, resume, events).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")
# No user configuration (theme, keymaps) may leak into tests.
os.environ["XDG_CONFIG_HOME"] = "/nonexistent-tunedeck-test-config"


@pytest.fixture(scope="session")
def shared_models_dir(tmp_path_factory) -> Path:
    """One models/ folder for the whole session (holds the converted default model)."""
    return tmp_path_factory.mktemp("models-cache")


@pytest.fixture(autouse=True)
def tunedeck_home(tmp_path, monkeypatch, shared_models_dir) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(shared_models_dir, target_is_directory=True)
    monkeypatch.setenv("TUNEDECK_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def default_model_dir(shared_models_dir, tmp_path_factory) -> Path:
    """The converted default model folder (converted once per session)."""
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("home-default")
    (home / "models").symlink_to(shared_models_dir, target_is_directory=True)
    mp.setenv("TUNEDECK_HOME", str(home))
    try:
        from engine import models

        return models.local_folder(models.DEFAULT_MODEL)
    finally:
        mp.undo()


@pytest.fixture(scope="session")
def default_model(default_model_dir):
    """The real default model, loaded once per session (fp32 on CPU). Do not mutate it."""
    from engine import models

    return models.load(str(default_model_dir))


@pytest.fixture(scope="session")
def tiny_model_dir(default_model_dir, tmp_path_factory) -> Path:
    """A random 2-layer Llama (hidden 64) with the default tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(str(default_model_dir))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
