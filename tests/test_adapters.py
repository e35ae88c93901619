"""Adapters: found in run directories, attached once, switched without reloading the base."""

from __future__ import annotations

import pytest
import torch
from adapter_runs import make_run, save_random_lora

from engine import adapter_base, adapters, models
from engine.adapters import AdapterSet
from engine.errors import TunedeckError
from engine.generation import GenerationParams, Generator

GREEDY = GenerationParams(max_new_tokens=12)
# PEFT asks transformers a deprecated question; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")


def _ids(tokenizer, text: str) -> list[int]:
    out = tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                        add_generation_prompt=True)
    return list(out["input_ids"] if not isinstance(out, list) else out)


def _logits(model, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].clone()


# --------------------------------------------------------------------------- finding


def test_list_and_resolve_final_and_checkpoints(tiny_model_dir):
    run = make_run(tiny_model_dir, name="sql", checkpoints=(10, 20))
    found = adapters.list_available()
    assert [a.ref for a in found] == [run.id, f"{run.id}:checkpoint-20",
                                      f"{run.id}:checkpoint-10"]
    final = found[0]
    assert final.kind == "final" and final.path == run.adapter_dir
    assert final.base_model == str(tiny_model_dir) and final.method == "lora"
    assert final.state == "done"
    assert adapters.resolve(run.id) == final
    assert adapters.resolve("sql").path == run.adapter_dir  # a unique part of the id
    assert adapters.resolve(f"{run.id}:20").step == 20
    assert adapters.resolve(f"{run.id}:latest").step == 20
    assert adapters.resolve(f"{run.id}:checkpoint-10").path.name == "checkpoint-10"
    # A folder given by path is recognised as part of its run.
    by_path = adapters.resolve(str(run.checkpoints_dir / "checkpoint-10"))
    assert by_path.kind == "checkpoint" and by_path.run_id == run.id and by_path.step == 10
    assert adapters.resolve(str(run.path)).kind == "final"
    assert len({a.name for a in found}) == 3 and all("." not in a.name for a in found)


def test_resolve_errors_say_what_exists(tiny_model_dir, tmp_path):
    run = make_run(tiny_model_dir, name="ckpt-only", checkpoints=(5,), final=False)
    with pytest.raises(TunedeckError, match=r"no final adapter yet.*:checkpoint-5.*latest"):
        adapters.resolve(run.id)
    with pytest.raises(TunedeckError, match=r"no such checkpoint.*checkpoint-5"):
        adapters.resolve(f"{run.id}:checkpoint-7")
    with pytest.raises(TunedeckError, match="No run 'nope'"):
        adapters.resolve("nope")
    with pytest.raises(TunedeckError, match="has no adapter_config.json"):
        adapters.resolve(str(tmp_path))


def test_a_checkpoint_cut_short_is_never_offered(tiny_model_dir):
    from engine.training.rundir import COMPLETE

    run = make_run(tiny_model_dir, name="cut", checkpoints=(10, 20))
    (run.checkpoints_dir / "checkpoint-20" / COMPLETE).unlink()  # killed while it was saved
    assert [a.ref for a in adapters.run_adapters(run)] == [run.id, f"{run.id}:checkpoint-10"]
    assert adapters.resolve(f"{run.id}:latest").step == 10
    with pytest.raises(TunedeckError, match=r"checkpoint-20 was cut short.*:checkpoint-10"):
        adapters.resolve(f"{run.id}:checkpoint-20")


@pytest.mark.parametrize("content", [
    b"model: [unclosed\n",  # YAMLError
    b"model: \xff\xfe bad utf-8\n",  # UnicodeDecodeError
    b"started: 2024-02-30\n",  # an impossible date: ValueError from the YAML timestamp
    b"[" * 5000,  # nested past the recursion limit
    b"- a list, not a mapping\n",
])
def test_read_run_config_is_empty_for_any_broken_file(tmp_path, content):
    from engine.training.rundir import RunDir

    run = RunDir(tmp_path)
    assert adapters.read_run_config(run) == {}  # missing
    run.config_path.write_bytes(content)
    assert adapters.read_run_config(run) == {}
    run.config_path.write_text("model: m\nmethod: lora\n")
    assert adapters.read_run_config(run) == {"model": "m", "method": "lora"}


# --------------------------------------------------------------------------- switching


def test_attaching_an_adapter_prints_no_warning_about_library_internals(tiny_model_dir):
    """PEFT reads a transformers alias deprecated in 5.x (a FutureWarning on every load): noise
    about their code, not the user's, in the Playground, eval and `prompt --adapter`."""
    import warnings

    run = make_run(tiny_model_dir, name="quiet", checkpoints=(20,))
    loaded = models.load(str(tiny_model_dir))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        aset = AdapterSet.of(loaded)
        aset.attach(run.id)
        aset.attach(f"{run.id}:checkpoint-20")  # the second goes through load_adapter
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]


def test_hot_swap_changes_output_and_switching_back_restores_it(tiny_model_dir):
    run = make_run(tiny_model_dir, name="swap", checkpoints=(20,))
    loaded = models.load(str(tiny_model_dir))
    ids = _ids(loaded.tokenizer, "Write a SQL query that counts the customers.")
    gen = Generator(loaded.model, loaded.tokenizer)
    base_logits = _logits(loaded.model, ids)
    base_text = gen.generate(ids, GREEDY).text

    aset = AdapterSet.of(loaded)
    assert AdapterSet.of(loaded) is aset and aset.active is None and aset.describe() == "base"
    final = aset.attach(run.id)
    assert aset.active == final and aset.describe() == f"{run.id} (final)"
    gen.clear_cache()
    final_logits = _logits(loaded.model, ids)
    final_text = gen.generate(ids, GREEDY).text
    assert not torch.allclose(final_logits, base_logits)
    assert final_text != base_text

    ckpt = aset.attach(f"{run.id}:checkpoint-20")
    ckpt_logits = _logits(loaded.model, ids)
    assert aset.active == ckpt
    assert not torch.allclose(ckpt_logits, final_logits)

    # Back to the base: bit-identical, and the same through the generator.
    revision = aset.revision
    aset.activate(None)
    assert aset.revision > revision
    gen.clear_cache()
    assert torch.equal(_logits(loaded.model, ids), base_logits)
    assert gen.generate(ids, GREEDY).text == base_text
    # And to the first adapter again: the same numbers as the first time.
    aset.activate(final)
    gen.clear_cache()
    assert torch.equal(_logits(loaded.model, ids), final_logits)
    assert gen.generate(ids, GREEDY).text == final_text

    # Each adapter is read from disk once: attaching again only activates it.
    assert aset.attach(run.id) == final
    assert sorted(aset.peft.peft_config) == sorted([final, ckpt])
    with pytest.raises(TunedeckError, match="not attached"):
        aset.activate("nothing-like-this")

    aset.detach(ckpt)
    assert list(aset.attached) == [final]
    aset.unload()
    assert aset.active is None and aset.peft is None
    assert torch.equal(_logits(loaded.model, ids), base_logits)
    assert not any("lora" in name for name, _ in loaded.model.named_modules())


def test_attach_without_activating_keeps_the_base(tiny_model_dir):
    run = make_run(tiny_model_dir, name="quiet")
    loaded = models.load(str(tiny_model_dir))
    ids = _ids(loaded.tokenizer, "hello")
    base_logits = _logits(loaded.model, ids)
    name = adapters.attach(loaded, run.id, activate=False)
    assert AdapterSet.of(loaded).active is None
    assert torch.equal(_logits(loaded.model, ids), base_logits)
    with AdapterSet.of(loaded).using(name):
        assert not torch.allclose(_logits(loaded.model, ids), base_logits)
    assert AdapterSet.of(loaded).active is None
    assert torch.equal(_logits(loaded.model, ids), base_logits)


def test_compare_runs_base_and_adapter_on_the_same_input(tiny_model_dir):
    run = make_run(tiny_model_dir, name="cmp")
    loaded = models.load(str(tiny_model_dir))
    gen = Generator(loaded.model, loaded.tokenizer)
    ids = _ids(loaded.tokenizer, "Name three colours.")
    prefix = len(ids) - 3
    base_text = gen.generate(ids, GREEDY, prefix_len=prefix).text  # leaves a cached prefix
    aset = AdapterSet.of(loaded)
    name = aset.attach(run.id)
    adapter_text = (gen.clear_cache(), gen.generate(ids, GREEDY).text)[1]
    aset.activate(None)
    gen.generate(ids, GREEDY, prefix_len=prefix)  # the cache now holds base keys/values

    streamed: dict = {}
    results = adapters.compare(loaded, gen, ids, GREEDY, [None, name], prefix_len=prefix,
                               on_text=lambda n, d: streamed.setdefault(n, []).append(d))
    assert results[None].text == base_text
    assert results[name].text == adapter_text != base_text  # stale base cache not reused
    assert "".join(streamed[name]) == adapter_text
    assert aset.active is None  # restored


def test_adapter_for_another_model_is_a_clear_error(tiny_model_dir, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    other = tmp_path / "other-model"
    config = LlamaConfig.from_pretrained(str(tiny_model_dir))
    config.hidden_size, config.intermediate_size = 32, 64
    LlamaForCausalLM(config).save_pretrained(str(other))
    models.load_tokenizer(str(tiny_model_dir)).save_pretrained(str(other))
    run = make_run(other, name="other")
    loaded = models.load(str(tiny_model_dir))
    info = adapters.resolve(run.id)
    assert "trained on" in adapter_base.base_mismatch(info, loaded)
    assert adapter_base.base_mismatch(adapters.resolve(make_run(tiny_model_dir).id),
                                      loaded) is None
    ids = _ids(loaded.tokenizer, "hello")
    before = _logits(loaded.model, ids)
    with pytest.raises(TunedeckError, match=r"does not fit .* has \d+ features, the adapter "
                       r"expects \d+.* make that the active model first"):
        AdapterSet.of(loaded).attach(run.id)
    # Refused before PEFT touched the model: it is the plain base, as before.
    assert not any("lora" in name for name, _ in loaded.model.named_modules())
    assert torch.equal(_logits(loaded.model, ids), before)


def test_a_peft_failure_is_one_line_cut_at_300(tiny_model_dir, monkeypatch):
    import peft

    def from_pretrained(*_args, **_kwargs):
        raise ValueError("\n  " + "k" * 400 + "\nmore")

    run = make_run(tiny_model_dir, name="peft-fails")
    loaded = models.load(str(tiny_model_dir))
    monkeypatch.setattr(peft.PeftModel, "from_pretrained", from_pretrained)
    with pytest.raises(TunedeckError) as caught:
        AdapterSet.of(loaded).attach(run.id)
    assert str(caught.value) == (
        f"Could not put adapter {run.id} (final) on {loaded.info.name}: ValueError: "
        f"{'k' * 300}. It was trained on "
        f"{tiny_model_dir}; make that the active model first.")


@pytest.mark.slow
def test_real_default_model_with_an_adapter_and_back(default_model_dir, tmp_path):
    """The real model: an adapter changes its answer; the base answers Paris again after."""
    adapter_dir = save_random_lora(default_model_dir, tmp_path / "adapter", seed=1, r=4)
    loaded = models.load(str(default_model_dir))  # its own copy: the session model stays clean
    gen = Generator(loaded.model, loaded.tokenizer)
    ids = _ids(loaded.tokenizer, "What is the capital of France?")
    params = GenerationParams(max_new_tokens=10)
    assert gen.generate(ids, params).text.startswith("The capital of France is Paris")
    aset = AdapterSet.of(loaded)
    aset.attach(str(adapter_dir))
    gen.clear_cache()
    changed = gen.generate(ids, params).text
    assert not changed.startswith("The capital of France is Paris")
    aset.activate(None)
    gen.clear_cache()
    assert gen.generate(ids, params).text.startswith("The capital of France is Paris")


def test_load_with_adapter_loads_the_adapters_own_base(tiny_model_dir):
    run = make_run(tiny_model_dir, name="own-base")
    notes: list[str] = []
    loaded = adapter_base.load_with_adapter(None, run.id, warn=notes.append)
    assert loaded.info.location == str(tiny_model_dir)
    assert adapters.active_ref(loaded) == run.id and notes == []
    assert adapters.active_ref(models.load(str(tiny_model_dir))) is None
    plain = adapter_base.load_with_adapter(str(tiny_model_dir), None)
    assert plain.extras == {}


def test_bound_generators_keep_the_prefix_cache_only_for_their_own_adapter(tiny_model_dir):
    run = make_run(tiny_model_dir, name="cache")
    loaded = models.load(str(tiny_model_dir))
    gen = Generator(loaded.model, loaded.tokenizer)
    aset = AdapterSet.of(loaded)
    name = aset.attach(run.id)
    ids = _ids(loaded.tokenizer, "Count to three.")
    prefix = len(ids) - 2
    tuned, base = aset.bind(gen), aset.bind(gen, None)
    assert tuned.name == name and tuned.adapter_ref == run.id and base.label == "base"
    first = tuned.generate(ids, GREEDY, prefix_len=prefix)
    again = tuned.generate(ids, GREEDY, prefix_len=prefix)
    assert again.reused_prefix_tokens == prefix and again.text == first.text
    on_base = base.generate(ids, GREEDY, prefix_len=prefix)
    assert on_base.reused_prefix_tokens == 0 and on_base.text != first.text
    back = tuned.generate(ids, GREEDY, prefix_len=prefix)
    assert back.reused_prefix_tokens == 0 and back.text == first.text
    assert aset.active == name  # binding never changes what is active
