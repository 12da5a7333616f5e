"""Booster (Huang et al., ICLR 2025): attenuating the harmful perturbation. Alignment stage.

Each step, on a batch of the harmful pool (h: its mean CE) and the alignment batch:

    g   = grad h(w)                         the harmful gradient
    w'  = w - alpha * g / (||g|| + 1e-7)    one simulated harmful step, normalised
    g'  = grad h(w')                        the harmful gradient after it
    update direction = grad L_align(w) + lambda * (g - g')

g - g' is the gradient in w of h(w) - h(w - alpha * d) with the step d held fixed: the
drop in harmful loss one harmful fine-tuning step would buy. Minimising it makes the
aligned model hard to move toward harmful answers. The trainer back-propagates
L_align + lambda * <g - g', w> (the second term's gradient is the correction), so
accelerate's loss scaling, gradient accumulation and DDP averaging apply to it as to the
alignment gradient; the log reports L_align as `loss` and h(w) - h(w') as `attenuation`.

Faithful to git-disl/Booster, trainer.py (`BoosterAlignmentTrainer.training_step`: the
harmful gradient, the normalised step, the gradient after it and the weights restored, all
recomputed every step; the alignment gradient plus lamb * (stored - perturbed)) with
lambda = 5, alpha = 0.1 and a harmful batch of 10 (script/alignment/smooth_align.sh,
`get_harmful_dataloader`). Differences: the harmful pool is the embedded `manyshot-harmful`
source (disjoint from the attack's, the alignment set's and AdvBench's prompts; see
bds/data/embedded.py) where the official run reads BeaverTails harmful samples 5000-9999
(the attack takes its samples from the start of the same set); the weights are restored
from a copy, bit-exact, not by adding the step back; the harmful passes ask autograd for
the trainable weights' gradients only. The run's other settings (lr 5e-4, 20 epochs,
batch 10, constant schedule) are the train section's business.
Cost: three forward/backward passes per step (two on the harmful batch), about 3x SFT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from bds.config import SourceConfig
from bds.defenses.base import Defense, StepBatch
from bds.defenses.harmful_pool import HarmfulBatches, default_pool_field
from bds.defenses.registry import Data, DefenseSettings, Stage
from bds.errors import FieldError

EPS = 1e-7  # the official code's guard against a zero harmful gradient


@dataclass
class BoosterSettings(DefenseSettings):
    """lamb: lambda, the attenuation term's weight; alpha: the simulated harmful step's
    size (on the normalised gradient); harmful: the harmful pool's source;
    harmful_batch_size: its samples per step."""

    stages: ClassVar[tuple[Stage, ...]] = ("alignment",)
    needs: ClassVar[frozenset[Data]] = frozenset({"user", "harmful"})
    name: str = "booster"
    lamb: float = 5.0
    alpha: float = 0.1
    harmful: SourceConfig = default_pool_field()
    harmful_batch_size: int = 10

    def validate(self) -> None:
        for key in ("lamb", "alpha"):
            if getattr(self, key) < 0:
                raise FieldError(key, f"must be >= 0, got {getattr(self, key)}")
        if self.harmful_batch_size < 1:
            raise FieldError("harmful_batch_size", f"must be >= 1, got {self.harmful_batch_size}")


def harmful_step_gradients(harmful_loss: Any, params: list[Any], alpha: float):
    """(g, g', h(w), h(w')) for one simulated normalised harmful step of size alpha.

    `harmful_loss()` computes h at the current weights; `params` are the weights it is
    differentiated in, restored bit-exact afterwards."""
    import torch

    def grad(loss: Any) -> list[Any]:
        found = torch.autograd.grad(loss, params, allow_unused=True)
        return [torch.zeros_like(p) if x is None else x for p, x in zip(params, found, strict=True)]

    h = harmful_loss()
    g = grad(h)
    saved = [p.detach().clone() for p in params]
    norm = torch.stack([x.float().norm() for x in g]).norm() + EPS
    with torch.no_grad():
        for p, x in zip(params, g, strict=True):
            p.sub_(alpha * x / norm)
    try:
        h_after = harmful_loss()
        g_after = grad(h_after)
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
    return g, g_after, h.detach(), h_after.detach()


class Booster(Defense):
    """The base step's alignment loss plus lambda * (g - g') on the trainable weights."""

    def after_model(self) -> None:
        self.harmful = HarmfulBatches(
            self.run, self.settings.harmful, self.settings.harmful_batch_size
        )
        self.params = [p for p in self.run.peft_model.parameters() if p.requires_grad]

    def objective(self, step: int, batch: StepBatch):
        run, s = self.run, self.settings
        harmful = run.device_batch(self.harmful.batch(step))
        g, g_after, h, h_after = harmful_step_gradients(
            lambda: run.sample_losses(run.peft_model, harmful).mean(), self.params, s.alpha
        )
        loss, stats = super().objective(step, batch)  # after the weights are restored
        correction = sum(
            (s.lamb * (a - b).detach() * p).sum()
            for a, b, p in zip(g, g_after, self.params, strict=True)
        )
        stats.update(
            harmful_loss=float(h),
            harmful_loss_after=float(h_after),
            attenuation=float(h - h_after),
        )
        return loss + correction, stats
