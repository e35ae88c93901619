"""The fast SFT path: TRL's `SFTTrainer` with three changes that matter on small hardware.

1. Batches are cut from the length-sorted dataset (batch order shuffled per epoch), so a batch
   holds sequences of nearly equal length and padding falls from ~16-36% to ~1%.
2. The LM head runs only where a label is trained: the decoder's hidden states are gathered at
   those positions and projected there. With completion-only loss the prompt and padding
   positions never reach the 49k-wide vocabulary projection.
3. A prompt prefix that every row of the batch shares (chat template, system prompt, the task's
   instruction) goes through the decoder once, not once per row: its keys and values are
   broadcast to the batch and the rows continue from them. Autograd sums the rows' gradients
   back into the one prefix pass, so loss and gradients equal the per-row computation (checked
   to 1e-5 by a test). On the text-to-SQL sample 142 of 215 tokens per row are such a prefix.

Evaluation keeps only the loss, so it takes the same path, with rows in length order.
`bench/train_throughput.py` measures it against a plain `transformers.Trainer` + PEFT (see
docs/benchmarks.md). Everything else — callbacks, checkpoints, resume, evaluation — is the
trainer's own.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Sampler
from trl import SFTTrainer

from engine.training.batching import LengthSortedBatchSampler, shared_prefix_length
from engine.training.data import IGNORE


class FastSFTTrainer(SFTTrainer):
    """`SFTTrainer` with length-sorted batches and the LM head computed only at loss positions."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # compute_loss divides by the trained-token count of the whole accumulated batch, which
        # the trainer counts only for models it believes take loss kwargs: so it is told so, and
        # told not to divide by the accumulation steps again.
        self.model_accepts_loss_kwargs = True
        self.loss_is_scaled_for_ga = True
        self.tokens_seen = 0  # non-padding tokens trained on (read by the event callback)

    # ------------------------------------------------------------------ batching
    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if dataset is None or not hasattr(dataset, "__len__") or "input_ids" not in getattr(
                dataset, "column_names", []):
            return super()._get_train_sampler(train_dataset)
        lengths = [len(ids) for ids in dataset["input_ids"]]
        return LengthSortedBatchSampler(lengths, self.args.train_batch_size, self.args.seed,
                                        processes=self.args.world_size)

    def _get_eval_sampler(self, eval_dataset: Any) -> Sampler | None:
        # Evaluation in length order: little padding, and batches whose rows share a prefix.
        if (self.args.world_size > 1 or eval_dataset is None or "input_ids" not in getattr(
                eval_dataset, "column_names", [])):
            return super()._get_eval_sampler(eval_dataset)
        lengths = [len(ids) for ids in eval_dataset["input_ids"]]
        return sorted(range(len(lengths)), key=lengths.__getitem__)

    # ------------------------------------------------------------------ loss
    def _head_and_decoder(self, model: Any, input_ids: torch.Tensor) -> tuple[Any, Any] | None:
        inner = self.accelerator.unwrap_model(model)
        if inner is not model:
            # Wrapped for distributed training: the wrapper's forward must run (gradient sync).
            return None
        if hasattr(inner, "get_base_model"):
            inner = inner.get_base_model()
        get_decoder = getattr(inner, "get_decoder", None)
        head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
        decoder = get_decoder() if get_decoder else None
        if decoder is None or head is None or decoder is inner:
            return None
        if not head_is_plain(model, decoder, head, input_ids):
            return None
        return decoder, head

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        labels = inputs.get("labels")
        # Evaluation asks for outputs too, but without compute_metrics it keeps only the loss
        # (Trainer.evaluate sets prediction_loss_only): so it takes the fast path as well.
        wants_logits = return_outputs and (model.training or self.compute_metrics is not None)
        if wants_logits or labels is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        targets = labels[:, 1:]
        keep = targets != IGNORE
        model_inputs = {k: v for k, v in inputs.items()
                        if k in ("input_ids", "attention_mask", "position_ids")}
        parts = self._head_and_decoder(model, inputs["input_ids"])
        if parts is not None:
            decoder, head = parts
            prefix = shared_prefix_length(inputs, keep) if prefix_sharing_ok(decoder) else 0
            # The decoder is called past the prepared model's forward, which is where
            # accelerate puts the mixed-precision autocast: so it is entered here.
            with self.accelerator.autocast():
                if prefix:
                    hidden = forward_with_shared_prefix(decoder, model_inputs, prefix)
                    targets, keep = targets[:, prefix:], keep[:, prefix:]
                else:
                    hidden = decoder(**model_inputs, use_cache=False).last_hidden_state
                logits = head(hidden[:, :-1][keep])
        else:
            # Through the wrapper: ask for logits only at the union of the batch's loss positions.
            positions = keep.any(dim=0).nonzero().flatten()
            out = model(**model_inputs, use_cache=False, logits_to_keep=positions)
            logits = out.logits[keep[:, positions]]
            targets = targets[:, positions]
            keep = keep[:, positions]
        loss_sum = F.cross_entropy(logits.float(), targets[keep], reduction="sum")
        count = num_items_in_batch if num_items_in_batch is not None else keep.sum()
        loss = loss_sum / torch.as_tensor(count, device=loss_sum.device).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        if model.training:
            mask = inputs.get("attention_mask")
            real = inputs.get("real_tokens")  # packed batches (PackedCollator) have no mask
            self.tokens_seen += (int(mask.sum()) if mask is not None else int(real)
                                 if real is not None else inputs["input_ids"].numel())
        return (loss, {"loss": loss}) if return_outputs else loss


_PLAIN_HEAD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def head_is_plain(model: Any, decoder: Any, head: Any, input_ids: torch.Tensor) -> bool:
    """Whether the model's logits are exactly `head(decoder(...))`, checked once per model.

    Some models do more after the head (Gemma 2/3 cap the logits with tanh, Granite divides
    them, Cohere scales them); computing the head by hand would silently train them on wrong
    logits, so those go through the model's own forward (logits only at the loss positions).
    Both are run on a few tokens of the first batch with the same random state, so dropout
    masks agree; no eval() switch, which would repack 4-bit weights on some CPUs.
    """
    known = _PLAIN_HEAD.get(decoder)
    if known is not None:
        return known
    ids = input_ids[:1, :8]
    devices = [ids.device] if ids.device.type == "cuda" else []
    with torch.no_grad():
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(0)
            expected = model(input_ids=ids, use_cache=False).logits
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(0)
            mine = head(decoder(input_ids=ids, use_cache=False).last_hidden_state)
    plain = expected.shape == mine.shape and torch.allclose(
        expected.float(), mine.float(), rtol=1e-3, atol=1e-3)
    _PLAIN_HEAD[decoder] = plain
    return plain


def prefix_sharing_ok(decoder: Any) -> bool:
    """Only for decoders whose cache is plain full attention, without gradient checkpointing
    (which turns the cache off). Sliding-window and linear-attention caches keep the per-row
    path."""
    checkpointing = getattr(decoder, "is_activation_checkpointing", None)
    if checkpointing is None:  # transformers < 5.x spells it the old way
        checkpointing = getattr(decoder, "is_gradient_checkpointing", False)
    if checkpointing:
        return False
    config = getattr(decoder, "config", None)
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return False
    layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
    return layer_types == {"full_attention"}


def forward_with_shared_prefix(decoder: Any, model_inputs: dict[str, Any],
                               prefix: int) -> torch.Tensor:
    """Hidden states of positions `prefix:` of every row, the shared prefix run once.

    The prefix's keys/values are expanded (a view) to the batch size: the rows' attention reads
    them, and backward sums the rows' gradients into the single prefix pass. With LoRA dropout
    the prefix shares one dropout mask across the batch; the gradient stays unbiased.
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    ids = model_inputs["input_ids"]
    cache = DynamicCache(config=decoder.config)
    decoder(input_ids=ids[:1, :prefix], cache=cache, use_cache=True)  # fills `cache` in place
    rows = ids.shape[0]
    for layer in cache.layers:
        if type(layer) is not DynamicLayer:  # pragma: no cover - guarded by prefix_sharing_ok
            raise RuntimeError(f"prefix sharing needs plain attention caches, got {type(layer)}")
        layer.keys = layer.keys.expand(rows, -1, -1, -1)
        layer.values = layer.values.expand(rows, -1, -1, -1)
    out = decoder(input_ids=ids[:, prefix:], attention_mask=model_inputs.get("attention_mask"),
                  cache=cache, use_cache=True)
    return out.last_hidden_state


def cast_trainable_to_fp32(model: Any) -> int:
    """TRL casts QLoRA adapters to bf16; on a CPU without fast bf16 that halves the speed
    (30.9 → 58.5 tokens/s measured), so trainable parameters go back to fp32. Returns how many."""
    n = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
            n += 1
    return n


def keep_4bit_layout_trainable(model: Any) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for fast CPU inference.

    On CPUs with AVX512-BF16, a `Linear4bit` forward in eval mode (sample generation, evaluation)
    converts its weight in place to a CPU inference layout whose kernel has no autograd: training
    after that backpropagates through it without a gradient formula ("gemv_4bit: an autograd
    kernel was not registered"), silently breaking the LoRA gradients of the layers below.
    Returns how many layers were switched off.
    """
    n = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n


def prepare_cpu_training(model: Any) -> dict[str, int]:
    """Everything a model on the CPU needs before its first step, in one place for every recipe
    and for the benchmark: fp32 adapters, the trainable 4-bit layout, the cheaper LoRA dropout."""
    from engine.training.dropout import install_fast_dropout

    return {"fp32": cast_trainable_to_fp32(model),
            "4bit_layout": keep_4bit_layout_trainable(model),
            "fast_dropout": install_fast_dropout(model)}

