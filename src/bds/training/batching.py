"""Deterministic batches: the indices of step t are a pure function of (seed, t).

So a resumed run sees exactly the batches an uninterrupted run would, and every rank can
take its slice of the same global batch without talking to the others.
"""

from __future__ import annotations

import torch

from bds.data.tokenize import IGNORE_INDEX, TokenizedSample


class StepSampler:
    """Global batches of `batch_size` through seeded per-epoch permutations of range(n).

    Positions run on across epoch boundaries (the stream of permutations is endless), so
    every batch is full: the alignment set cycles, the user set's last partial batch tops up
    from the next epoch's order.
    """

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool = True):
        self.n = n
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            if len(self._perms) > 4:  # a batch spans at most two epochs; keep a few
                self._perms.pop(min(self._perms))
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms[epoch] = (
                torch.randperm(self.n, generator=g).tolist()
                if self.shuffle
                else list(range(self.n))
            )
        return self._perms[epoch]

    def global_batch(self, step: int) -> list[int]:
        start = step * self.batch_size
        return [
            self._perm(pos // self.n)[pos % self.n] for pos in range(start, start + self.batch_size)
        ]

    def rank_batch(self, step: int, rank: int, world: int) -> list[int]:
        """This rank's contiguous slice of the global batch (batch_size is the global size)."""
        per = self.batch_size // world
        return self.global_batch(step)[rank * per : (rank + 1) * per]


def collate(samples: list[TokenizedSample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sample; padding is masked from attention and loss."""
    width = max(len(s.input_ids) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for row, s in enumerate(samples):
        ids[row, : len(s.input_ids)] = torch.tensor(s.input_ids)
        labels[row, : len(s.labels)] = torch.tensor(s.labels)
        mask[row, : len(s.input_ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
