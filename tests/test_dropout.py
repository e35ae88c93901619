"""The CPU LoRA dropout: the same Bernoulli keep-mask as `nn.Dropout`, unbiased, seeded by torch,
the identity in eval mode, and installed on the adapters of every CPU training run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.training.dropout import FastDropout, install_fast_dropout

SENTIMENT = Path(__file__).resolve().parents[1] / "sample_data" / "sentiment"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.05, 0.3])
def test_drops_p_of_the_inputs_and_keeps_the_expectation(p, dtype):
    torch.manual_seed(0)
    x = torch.ones(400, 2500, dtype=dtype)  # 10^6 draws: the fraction is within ±0.002 at 4σ
    y = FastDropout(p).train()(x)
    dropped = (y == 0).float().mean().item()
    assert dropped == pytest.approx(p, abs=0.002)
    # Each of the four 16-bit lanes of a 64-bit draw drops at p, the top one included.
    lanes = (y == 0).float().flatten()[: 10**6].view(-1, 4).mean(0)
    assert lanes.tolist() == pytest.approx([p] * 4, abs=0.004)
    assert y.float().mean().item() == pytest.approx(1.0, abs=0.005)
    values = torch.unique(y.float()).tolist()
    assert values[0] == 0.0 and values[1:] == [pytest.approx(1 / (1 - p), rel=1e-2)]


def test_masks_are_independent_and_follow_the_torch_seed():
    drop = FastDropout(0.5).train()
    x = torch.ones(64, 64)
    torch.manual_seed(7)
    first, second = drop(x), drop(x)
    torch.manual_seed(7)
    assert torch.equal(drop(x), first)  # a resumed run that restores the RNG draws the same
    assert not torch.equal(first, second)
    # Neighbouring elements come from different 16-bit lanes of one draw: no correlation.
    kept = (first != 0).float().flatten()
    corr = torch.corrcoef(torch.stack([kept[:-1], kept[1:]]))[0, 1].item()
    assert abs(corr) < 0.05


def test_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(1)
    x = torch.randn(32, 48, requires_grad=True)
    drop = FastDropout(0.25).train()
    y = drop(x)
    g = torch.randn_like(y)
    y.backward(g)
    keep = y != 0
    assert torch.allclose(y, torch.where(keep, x * drop.scale, 0))
    assert torch.allclose(x.grad, torch.where(keep, g * drop.scale, 0))


def test_eval_mode_and_zero_p_are_the_identity():
    x = torch.randn(8, 8)
    assert FastDropout(0.5).eval()(x) is x
    assert FastDropout(0.0).train()(x) is x
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        FastDropout(1.0)


def test_install_swaps_only_lora_dropout(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1,
                                      target_modules="all-linear", task_type="CAUSAL_LM"))
    model.eval()
    ids = torch.tensor([[1, 5, 9, 14, 2]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
    lora_layers = [m for m in model.modules() if hasattr(m, "lora_A")]
    assert install_fast_dropout(model) == len(lora_layers) > 0
    assert all(isinstance(m.lora_dropout["default"], FastDropout)
               and m.lora_dropout["default"].p == 0.1 for m in lora_layers)
    assert not any(isinstance(m, torch.nn.Dropout) for name, m in model.named_modules()
                   if "lora_dropout" in name)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, before)  # eval: nothing dropped
    assert install_fast_dropout(model) == 0  # a second call finds nothing left to swap


def test_a_cpu_sft_run_trains_its_adapter_with_it(tiny_model_dir, tmp_path):
    from engine import models
    from engine.training import sft
    from engine.training.config import TrainConfig
    from engine.training.rundir import RunDir

    cfg = TrainConfig(model=str(tiny_model_dir), dataset=str(SENTIMENT), method="lora",
                      limit=8, batch_size=4, max_steps=2, max_seq_len=128, eval_every=0,
                      precision="fp32", lora_dropout=0.05)
    loaded = models.load(str(tiny_model_dir), device="cpu")
    trainer, _, _ = sft.build_trainer(cfg, RunDir(tmp_path / "run"), loaded, [])
    drops = [m for name, m in trainer.model.named_modules() if name.endswith("lora_dropout")]
    assert drops and all(isinstance(d["default"], FastDropout) for d in drops)
    trainer.train()  # the swapped modules train: a step runs and the adapter moves
    assert trainer.state.global_step == 2
