"""Batched generation and reference losses for the evaluator: left-padded prompts, greedy or
sampled `model.generate`, and the loss of a reference completion after its prompt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    from engine.generation import eos_token_ids

    return sorted(eos_token_ids(model, tokenizer))


def _left_pad(batch: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    import torch

    width = max(len(ids) for ids in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, row in enumerate(batch):
        ids[i, width - len(row):] = torch.tensor(list(row), dtype=torch.long)
        mask[i, width - len(row):] = 1
    return ids, mask


def generate_batch(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]],
                   max_new_tokens: int, samples: int = 1, temperature: float = 0.0,
                   seed: int = 0) -> list[list[tuple[str, int]]]:
    """Completions of left-padded prompts: for each prompt, `samples` (text, new tokens) pairs.
    Greedy when `temperature` is 0."""
    import torch

    eos = _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    ids, mask = _left_pad(prompts, pad_id)
    device = getattr(model, "device", None) or next(model.parameters()).device
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": pad_id,
                              "eos_token_id": eos}
    if temperature > 0:
        torch.manual_seed(seed)
        kwargs.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0,
                      num_return_sequences=samples)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    with torch.inference_mode():
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
    new = out[:, ids.shape[1]:].tolist()
    eos_set = set(eos)
    results: list[list[tuple[str, int]]] = []
    per = samples if temperature > 0 else 1
    for i in range(len(prompts)):
        group = []
        for row in new[i * per:(i + 1) * per]:
            end = next((j for j, t in enumerate(row) if t in eos_set), len(row))
            group.append((tokenizer.decode(row[:end], skip_special_tokens=True),
                          min(end + 1, len(row))))
        results.append(group)
    return results


def completion_losses(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]],
                      completions: Sequence[str], chat: bool) -> list[tuple[float, int]]:
    """Mean token loss of each reference completion (+ its EOS) after its prompt, and the token
    count. Left-padded with explicit positions, and logits only for the completion positions."""
    import torch

    eos = _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    targets: list[list[int]] = []
    for prompt, completion in zip(prompts, completions, strict=True):
        text = completion.strip()
        if not chat:
            text = (" " if tokenizer.decode(list(prompt)[-1:]).endswith(":") else "\n") + text
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
        targets.append(ids)
    rows = [list(p) + t for p, t in zip(prompts, targets, strict=True)]
    ids, mask = _left_pad(rows, pad_id)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    keep = max(len(t) for t in targets) + 1
    device = getattr(model, "device", None) or next(model.parameters()).device
    with torch.inference_mode():
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                       position_ids=positions.to(device), logits_to_keep=keep).logits.float()
    out: list[tuple[float, int]] = []
    width = ids.shape[1]
    for i, target in enumerate(targets):
        n = len(target)
        # logits[:, j] predicts token width - keep + j + 1.
        start = keep - 1 - n
        pred = logits[i, start:start + n]
        gold = ids[i, width - n:].to(pred.device)
        loss = torch.nn.functional.cross_entropy(pred, gold, reduction="mean").item()
        out.append((loss, n))
    return out
