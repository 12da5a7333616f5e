"""LDIFS (Mukhoti et al. 2023, as a harmful fine-tuning baseline): CE on the user batch plus
a feature-space regulariser that keeps each block's MLP output near the frozen model's.

    loss = CE(user) + sum_l  rho/2 * ||MLP_l(x; w) - MLP_l(x; w_0)||^2

over every decoder layer l, on the user batch x (all positions), where w_0 is the model the
fine-tuning starts from (the aligned model). A layer whose term reaches `layer_cap` is left
out of that step, as the official code does against overflow.

Faithful to git-disl/Booster, trainer.py (`LDIFSTrainer`: forward hooks on
`model.layers.{i}.mlp`, `rho/2 * torch.norm(a - a_0)**2` per layer, kept if < 0.1) with
rho = 1e-4 (script/finetune/LDIFS_poison_ratio.sh). Differences: the frozen features come
from the same model with the LoRA adapter disabled (equal to the official deep copy, whose
adapter is the untrained init, without a second copy in memory); the official step also
clips the gradient norm to 5, which is the trainer's business here, not the defense's.
Cost: one more forward (no backward) of the user batch per step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bds.defenses.base import Defense, StepBatch
from bds.defenses.registry import DefenseSettings
from bds.errors import BDSInputError, FieldError

MLP_NAME = re.compile(r"(?:^|\.)layers\.(\d+)\.mlp$")


@dataclass
class LDIFSSettings(DefenseSettings):
    """rho: the regulariser's strength; layer_cap: a layer term at or above it is dropped
    for that step (null: keep every term)."""

    name: str = "ldifs"
    rho: float = 1e-4
    layer_cap: float | None = 0.1

    def validate(self) -> None:
        if self.rho < 0:
            raise FieldError("rho", f"must be >= 0, got {self.rho}")
        if self.layer_cap is not None and self.layer_cap <= 0:
            raise FieldError("layer_cap", f"must be > 0 (or null), got {self.layer_cap}")


class LDIFS(Defense):
    """The base SFT step plus the feature distance to the adapter-free model."""

    def after_model(self) -> None:
        mlps = [m for n, m in self.run.peft_model.named_modules() if MLP_NAME.search(n)]
        if not mlps:
            raise BDSInputError(
                "defense ldifs compares each decoder layer's MLP output, but the model has "
                "no `layers.N.mlp` modules; use another defense for this architecture"
            )
        self.mlps = mlps
        self.features: dict[Any, Any] = {}
        self.capturing = False
        self.handles = [m.register_forward_hook(self._capture) for m in mlps]

    def _capture(self, module: Any, inputs: Any, output: Any) -> None:
        if self.capturing:  # the last forward wins (the first batch also checks the head)
            self.features[module] = output

    def _forward_features(self, forward: Any) -> tuple[Any, list[Any]]:
        self.features, self.capturing = {}, True
        try:
            result = forward()
        finally:
            self.capturing = False
        return result, [self.features[m] for m in self.mlps]

    def objective(self, step: int, batch: StepBatch):
        import torch

        from bds.training.trainer import model_inputs

        run = self.run
        (losses, _), trained = self._forward_features(lambda: run.losses(batch.user, []))
        inputs = model_inputs(run.device_batch(batch.user))
        with torch.no_grad(), run.peft_model.disable_adapter(), run.accelerator.autocast():
            _, frozen = self._forward_features(lambda: run.peft_model(**inputs, logits_to_keep=1))
        loss = losses.mean()
        stats = self.loss_stats(loss, batch, losses, None)
        kept, dropped = 0.0, 0
        for a, a0 in zip(trained, frozen, strict=True):
            term = self.settings.rho / 2 * (a.float() - a0.float()).pow(2).sum()
            if (
                self.settings.layer_cap is not None
                and float(term.detach()) >= self.settings.layer_cap
            ):
                dropped += 1
                continue
            loss = loss + term
            kept += float(term.detach())
        stats.update(loss=float(loss.detach()), feature_distance=kept, layers_dropped=dropped)
        return loss, stats

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
