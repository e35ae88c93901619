"""One adapter, one behaviour in the TUI: choosing a QLoRA adapter in the Playground loads its
4-bit base (and says so), the Evaluate screen's 4-bit box follows the adapter, the Models screen
says what the active model is."""

from __future__ import annotations

import pytest
from adapter_runs import make_run
from textual.widgets import Checkbox, OptionList, Select

from engine import adapter_base, models
from engine.adapters import AdapterSet
from tui.app import TunedeckApp

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")


def _qlora_run(model_dir, name="qlora"):
    run = make_run(model_dir, name=name, quantized=True)
    loaded = models.load(str(model_dir), quantize="4bit")
    adapter_base.write_record(run.adapter_dir, adapter_base.record_for(str(model_dir), loaded))
    return run


async def test_playground_puts_a_qlora_adapter_on_its_4bit_base(tiny_model_dir):
    run = _qlora_run(tiny_model_dir)
    full = models.load(str(tiny_model_dir))
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(120, 36)) as pilot:
        app.loaded, app.model_info, app.model_state = full, full.info, "ready"
        await pilot.press("f2")
        await app.workers.wait_for_complete()
        await pilot.pause(0.3)
        screen = app.screen
        await pilot.press("ctrl+f")
        await app.workers.wait_for_complete()
        await pilot.pause()
        options = app.screen.query_one("#adapters", OptionList)
        assert options.get_option_at_index(1).id == run.id
        assert "on 4-bit nf4" in str(options.get_option_at_index(1).prompt)
        await pilot.press("down", "enter")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause(0.3)
        assert app.screen is screen
        # The app's model is now the adapter's 4-bit base, with the adapter active on it.
        assert app.loaded is not full and app.loaded.info.quantization == "4bit"
        assert AdapterSet.of(app.loaded).active_info.ref == run.id
        status = str(screen.query_one("#pg-status").content)
        assert f"trained on 4-bit nf4 {tiny_model_dir.name}; loading that base" in status
        # The full-precision model was left alone: no adapter layers were put into it.
        assert not any("lora" in name for name, _ in full.model.named_modules())

        # The Models screen says the active model is 4-bit, and why.
        await pilot.press("f8")
        await pilot.pause()
        active = str(app.screen.query_one("#models-active").content)
        assert "loaded 4bit, the base the active adapter was trained on" in active


def _fake_run(name: str, method: str) -> str:
    """A finished run whose adapter folder is only its config: the screen reads, never loads."""
    import yaml

    from engine import paths
    from engine.training.rundir import RunDir, new_run_id

    run = RunDir(paths.ensure_dir(paths.runs_dir() / new_run_id(name)))
    run.config_path.write_text(yaml.safe_dump({"model": "smollm2-135m-instruct",
                                               "method": method}))
    run.write_status("done")
    paths.ensure_dir(run.adapter_dir)
    (run.adapter_dir / "adapter_config.json").write_text("{}")
    return run.id


async def test_evaluate_4bit_box_follows_the_adapter():
    qlora, lora = _fake_run("eval-q", "qlora"), _fake_run("eval-l", "lora")
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.press("f7")
        await pilot.pause()
        screen = app.screen
        select = screen.query_one("#eval-adapter", Select)
        box = screen.query_one("#eval-4bit", Checkbox)
        for ref, four in ((qlora, True), (lora, False), (qlora, True)):
            select.value = ref
            await pilot.pause(0.2)
            assert box.value is four, ref
        spec, _ = screen.spec_and_columns()
        assert (spec.adapter, spec.quantize, spec.model) == (qlora, None, None)
        box.value = False  # an override: the full-precision base
        assert screen.spec_and_columns()[0].quantize == "none"
        select.value = lora
        await pilot.pause(0.2)
        assert screen.spec_and_columns()[0].quantize is None
        box.value = True
        assert screen.spec_and_columns()[0].quantize == "4bit"
