"""How the fast SFT path cuts and lays out batches, without TRL: pre-flight predicts the same
batches the trainer will run (`batch_layout`), and imports no more than torch to do it.

- `LengthSortedBatchSampler`: batches of nearly equal length, in shuffled order.
- `PackedCollator`: padded batches, and packed rows that keep their examples apart.
- `shared_prefix_length`: the prompt prefix a batch's rows share, which runs once
  (`trainers.forward_with_shared_prefix`).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from engine.training.data import IGNORE

# A shared prefix shorter than this is not worth the second decoder call.
MIN_SHARED_PREFIX = 16


class LengthSortedBatchSampler:
    """Indices such that every consecutive block of the global batch (`batch_size` per device x
    `processes`) is a run of similar lengths.

    The dataloader cuts batches from consecutive indices, so sorting by length and shuffling
    whole blocks gives near padding-free batches while keeping the batch order random. The order
    is a function of (seed, epoch, processes) alone, so resuming mid-epoch replays the same
    batches.

    With several processes accelerate hands the dataloader's batches out in turn (rank r gets
    batches r, r + N, …: `BatchSamplerShard`, split_batches off), so one step's N batches are
    N consecutive per-device batches of this order: one block. The ranks of a step then get the
    same rows, in the same order, as one process with an N times larger batch, and similar
    lengths, so no rank waits long for another's longer rows at the gradient all-reduce.
    `processes`: the processes the batches are shared out to (None: this run's WORLD_SIZE).
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0,
                 processes: int | None = None):
        if processes is None:
            from engine.training.distributed import world_size

            processes = world_size()
        self.lengths = list(lengths)
        self.batch_size = max(1, batch_size)
        self.processes = max(1, processes)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def blocks(self) -> list[list[int]]:
        rng = random.Random(self.seed * 1000003 + self.epoch)
        # Ties broken randomly so equal-length rows do not always travel together.
        order = sorted(range(len(self.lengths)), key=lambda i: (self.lengths[i], rng.random()))
        size = self.batch_size * self.processes
        blocks = [order[i:i + size] for i in range(0, len(order), size)]
        rng.shuffle(blocks)
        return blocks

    def __iter__(self) -> Iterator[int]:
        for block in self.blocks():
            yield from block


class PackedCollator:
    """Batches of packed rows that stay rows: (rows, longest row) with each example's own
    position_ids and no attention mask, from which transformers builds every row's
    block-diagonal causal mask, so examples never attend to each other.

    TRL's padding-free collator flattens the whole batch into one sequence instead; without a
    varlen flash-attention kernel (CPU) that sequence's dense mask costs (rows x length)^2.
    Rows without `seq_lengths` (an unpacked evaluation set) get the usual padded batch.
    """

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id)
        labels = torch.full((len(rows), width), IGNORE)
        packed = all("seq_lengths" in r for r in rows)
        extra = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            ids[i, :n] = torch.tensor(row["input_ids"])
            labels[i, :n] = torch.tensor(row["labels"])
            if not packed:
                extra[i, :n] = 1
                continue
            lengths = [int(k) for k in row["seq_lengths"]]
            # An example's first token would be "predicted" from the previous example's last.
            starts = torch.tensor([0, *lengths[:-1]]).cumsum(0)
            labels[i, starts] = IGNORE
            extra[i, :n] = torch.cat([torch.arange(k) for k in lengths])
        if not packed:
            return {"input_ids": ids, "labels": labels, "attention_mask": extra}
        # Padding keeps position 0: each pad token is its own one-token example.
        return {"input_ids": ids, "labels": labels, "position_ids": extra,
                "real_tokens": torch.tensor(sum(len(r["input_ids"]) for r in rows))}


def shared_prefix_length(inputs: dict[str, Any], keep: Any) -> int:
    """How many leading positions every row of the batch shares and no loss is computed at.

    The prefix must be real tokens in every row (right padding), stop before the first trained
    position of any row (its hidden states never reach the head) and leave each row at least
    one token of its own. 0 when it is not worth sharing or cannot be shared.
    """
    import torch

    ids = inputs.get("input_ids")
    if ids is None or ids.dim() != 2 or ids.shape[0] < 2 or "position_ids" in inputs:
        return 0
    same = (ids == ids[:1]).all(dim=0)
    mask = inputs.get("attention_mask")
    if mask is not None:
        same &= mask.bool().all(dim=0)
    length = int(same.long().cumprod(0).sum())
    width = keep.shape[1]
    first_trained = torch.where(keep.any(dim=1), keep.long().argmax(dim=1), width)
    length = min(length, int(first_trained.min()), ids.shape[1] - 1)
    return length if length >= MIN_SHARED_PREFIX else 0


def batch_layout(rows: list[dict[str, list[int]]], batch_size: int,
                 seed: int = 0) -> tuple[float, float]:
    """(padding, shared) per real token in the batches FastSFTTrainer cuts from tokenized `rows`:
    the sampler's blocks, collated, and the prefix each runs once."""
    lengths = [len(r["input_ids"]) for r in rows]
    collate = PackedCollator(pad_token_id=0)  # the mask, not the pad id, marks padding
    padding = shared = 0
    for block in LengthSortedBatchSampler(lengths, batch_size, seed, processes=1).blocks():
        batch = collate([rows[i] for i in block])
        padding += batch["input_ids"].numel() - int(batch["attention_mask"].sum())
        keep = batch["labels"][:, 1:] != IGNORE
        shared += (len(block) - 1) * shared_prefix_length(batch, keep)
    real = sum(lengths)
    return (padding / real, shared / real) if real else (0.0, 0.0)
