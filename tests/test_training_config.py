"""Training config: YAML round trip, overrides, validation messages, the shipped examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.training.config import TrainConfig, example_configs


def test_yaml_round_trip_keeps_every_field(tmp_path):
    cfg = TrainConfig(method="lora", lora_r=8, target_modules=["q_proj", "v_proj"],
                      mapping={"question": "prompt"}, limit=20, learning_rate=1e-4)
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert TrainConfig.from_yaml(path) == cfg


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("method: lora\nlora_rank: 8\n")
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_yaml(path)
    assert "lora_rank" in str(err.value) and str(path) in str(err.value)
    assert "lora_r" in str(err.value)  # the known settings are listed


def test_wrong_type_is_reported_with_the_expected_type(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("batch_size: eight\n")
    with pytest.raises(ConfigError, match="batch_size must be int"):
        TrainConfig.from_yaml(path)


def test_yaml_float_written_without_dot_is_accepted(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 2e-4\nepochs: 2\n")  # YAML reads 2e-4 as a string
    cfg = TrainConfig.from_yaml(path)
    assert cfg.learning_rate == pytest.approx(2e-4) and cfg.epochs == 2.0


def test_overrides_parse_values_and_reject_bad_ones():
    cfg = TrainConfig().with_overrides(["lora_r=8", "max_steps=20", "packing=true",
                                        "target_modules=[q_proj, v_proj]", "limit=null"])
    assert (cfg.lora_r, cfg.max_steps, cfg.packing) == (8, 20, True)
    assert cfg.target_modules == ["q_proj", "v_proj"] and cfg.limit is None
    with pytest.raises(ConfigError, match="key=value"):
        TrainConfig().with_overrides(["max_steps"])
    with pytest.raises(ConfigError, match="nope"):
        TrainConfig().with_overrides(["nope=1"])


def test_validate_lists_every_problem():
    cfg = TrainConfig(method="sft", quant_type="int3", batch_size=0, lora_dropout=1.5,
                      dataset="no/such/folder")
    with pytest.raises(ConfigError) as err:
        cfg.validate(device_checks=False)
    text = str(err.value)
    for fragment in ("method", "quant_type", "batch_size", "lora_dropout", "no/such/folder"):
        assert fragment in text


def test_qlora_without_4bit_gives_the_reason(monkeypatch):
    from engine import models

    monkeypatch.setattr(models, "probe_4bit", lambda device=None: (False, "no CUDA library"))
    with pytest.raises(ConfigError, match="no CUDA library.*method=lora"):
        TrainConfig(method="qlora", dataset="sample_data/sentiment").validate()


def test_example_configs_load_validate_and_are_small():
    found = {p.stem: TrainConfig.from_yaml(p) for p in example_configs()}
    assert {"sql", "sentiment-lora", "arithmetic-full"} <= set(found)
    assert {c.method for c in found.values()} >= {"auto", "lora", "full"}
    # sql-grpo starts from the newest finished run named sql: none yet, and the error says how.
    with pytest.raises(ConfigError, match=r"no finished run named 'sql'.*configs/sql.yaml"):
        found["sql-grpo"].validate(device_checks=False)
    sft = fake_finished_run("20261201-100000-sql-a1b2", name="sql")
    older = fake_finished_run("20261130-100000-sql-c3d4", name="sql")
    assert found["sql-grpo"].resolved().adapter == str(sft / "adapter")  # pinned: the newest
    assert older.is_dir()
    for name, cfg in found.items():
        cfg.validate(device_checks=False)
        if name == "sql-grpo":  # GRPO counts its steps: ≤ 20 minutes on a 2-core CPU
            assert cfg.method == "grpo" and 0 < cfg.max_steps <= 100
            continue
        if name == "sql":  # the measured recipe: the whole train split, epochs, no EOS cut
            assert cfg.max_steps == -1 and cfg.limit is None and cfg.epochs >= 1
            continue
        # The quick demos are bounded so each finishes in minutes on a 2-core CPU.
        assert 0 < cfg.max_steps <= 60 and cfg.max_seq_len <= 256


def fake_finished_run(run_id: str, name: str):
    """A finished run folder with a final adapter (the files an adapter is recognised by)."""
    import json

    from engine import paths

    folder = paths.ensure_dir(paths.runs_dir() / run_id)
    (folder / "config.yaml").write_text(f"name: {name}\nmethod: lora\n", encoding="utf-8")
    (folder / "status.json").write_text(json.dumps({"state": "done"}), encoding="utf-8")
    adapter = folder / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}", encoding="utf-8")
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    return folder


def test_resolved_config_has_absolute_dataset_path():
    cfg = TrainConfig(dataset="sample_data/sentiment").resolved()
    assert cfg.dataset.startswith("/") and cfg.dataset.endswith("sample_data/sentiment")


def test_out_of_memory_fails_the_run_with_concrete_advice(monkeypatch):
    from engine.training import launch, runner

    def oom(run, stop_flag):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(runner, "train", oom)
    run = launch.create_run(TrainConfig(method="lora", dataset="sample_data/sentiment"))
    assert runner.main(run.path) == 1
    status = run.read_status()
    assert status["state"] == "failed" and run.state() == "failed"
    for advice in ("smaller batch_size", "qlora", "gradient checkpointing", "max_seq_len"):
        assert advice in status["error"]
    last = run.read_events()[-1]
    assert last["type"] == "state" and last["state"] == "failed" and "2.00 GiB" in last["error"]


def test_a_bad_dataset_fails_the_run_with_the_message(monkeypatch, tmp_path):
    from engine.training import launch, runner, sft

    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "no prompt here"}\n')
    run = launch.create_run(TrainConfig(method="lora", dataset=str(data)))
    monkeypatch.setattr(sft, "load_model", lambda config, progress=None: None)
    assert runner.main(run.path) == 1
    assert run.read_status()["state"] == "failed"
    error = run.read_status()["error"]
    assert "line 1" in error and "mapping" in error and "Traceback" not in error


def test_precision_is_checked_and_fp16_needs_a_gpu(monkeypatch):
    from engine import models

    with pytest.raises(ConfigError, match="precision: 'half' must be one of auto, fp32, bf16"):
        TrainConfig(precision="half").validate(device_checks=False)
    monkeypatch.setattr(models, "device_policy",
                        lambda device=None: models.DevicePolicy("cpu", "float32"))
    with pytest.raises(ConfigError, match="fp16 mixed precision needs a CUDA GPU"):
        TrainConfig(method="lora", precision="fp16").validate()


def test_auto_precision_follows_the_device_and_the_measured_cpu(monkeypatch):
    from engine import models
    from engine.training.shared import common_args, mixed_precision

    auto, fp32 = TrainConfig(), TrainConfig(precision="fp32")
    monkeypatch.setattr(models, "cpu_bf16_speedup", lambda: 4.5)  # native bf16 (AVX512-BF16)
    assert mixed_precision(auto, "cpu", "float32") == (
        "bf16", "this CPU's bf16 matmul is 4.5x its fp32 one")
    assert mixed_precision(fp32, "cpu", "float32") == ("fp32", "set in the config")
    args = common_args(auto, Path("/tmp/x"), "cpu", "float32")
    assert args["bf16"] and not args["fp16"] and not args["gradient_checkpointing"]
    monkeypatch.setattr(models, "cpu_bf16_speedup", lambda: 0.05)  # emulated bf16 (AVX2)
    assert mixed_precision(auto, "cpu", "float32")[0] == "fp32"
    assert not common_args(auto, Path("/tmp/x"), "cpu", "float32")["bf16"]
    assert mixed_precision(auto, "cuda", "float16")[0] == "fp16"
    assert mixed_precision(auto, "cuda", "bfloat16")[0] == "bf16"
    assert mixed_precision(auto, "mps", "float16")[0] == "fp32"


def test_preference_adapter_takes_every_form_the_other_commands_take(tmp_path):
    """Run id, id prefix, RUN:checkpoint-N and folders, as `tunedeck export` and the Playground
    accept them; anything else is a ConfigError naming the setting."""
    from engine import paths
    from engine.training.adapter_ref import resolve_adapter

    run = paths.ensure_dir(paths.runs_dir()) / "20261129-000000-sft-abcd"
    for folder in (run / "adapter", run / "checkpoints" / "checkpoint-20"):
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text("{}")
    (run / "checkpoints" / "checkpoint-20" / "trainer_state.json").write_text("{}")  # whole
    (run / "config.yaml").write_text("method: lora\n")
    assert resolve_adapter(run.name) == (run / "adapter").resolve()
    assert resolve_adapter("sft-abcd") == (run / "adapter").resolve()
    assert resolve_adapter(f"{run.name}:checkpoint-20") == (
        run / "checkpoints" / "checkpoint-20").resolve()
    assert resolve_adapter(str(run / "adapter")) == (run / "adapter").resolve()
    with pytest.raises(ConfigError, match=r"^adapter: .*nope"):
        resolve_adapter("nope")
    config = TrainConfig(method="dpo", adapter="nope")
    with pytest.raises(ConfigError, match="adapter: "):
        config.validate(device_checks=False)
