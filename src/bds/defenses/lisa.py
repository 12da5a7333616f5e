"""Lisa, lazy safety alignment (Huang et al., NeurIPS 2024): bi-state fine-tuning with a
proximal term. Not the unrelated LISA layer-sampling optimizer.

The run alternates two states: `alignment_steps` steps on alignment batches, then
`finetune_steps` steps on user batches, and again (it starts in the alignment state). At
each switch the trainable weights are kept as the anchor w_switch; after the first
`proximal_after` of the run's steps, each state's loss adds  rho/2 * ||w - w_switch||^2,
pulling the user state toward the weights the last alignment state ended at (and the
alignment state toward the last user state's). Steps count over the user data as in plain
SFT, so an alignment step takes the place of a user batch.

Faithful to git-disl/Lisa, trainer.py (`LisaTrainer.check_mode`, `switch_model`,
`training_step`: the proximal term over `param.requires_grad` weights, from step
0.1 * total on) with the defaults of script/finetune/lisa_poison_ratio.sh: rho = 1,
100 alignment / 900 fine-tuning steps (the Booster-protocol script uses rho = 0.01).
Differences: the alignment set is the run's D_safe (as for every defense), where the
official script takes 10000 BeaverTails samples; CE is the project's mean per-sample loss.
Cost: one copy of the trainable weights; no extra pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from bds.defenses.base import Defense, StepBatch
from bds.defenses.registry import Data, DefenseSettings
from bds.errors import BDSInputError, FieldError


@dataclass
class LisaSettings(DefenseSettings):
    """rho: the proximal term's strength; alignment_steps / finetune_steps: the length of
    each state; proximal_after: the share of the run's steps before the term applies."""

    needs: ClassVar[frozenset[Data]] = frozenset({"user", "alignment"})
    name: str = "lisa"
    rho: float = 1.0
    alignment_steps: int = 100
    finetune_steps: int = 900
    proximal_after: float = 0.1

    @property
    def alignment_batch(self) -> bool:  # a step trains on one source, never both
        return False

    def validate(self) -> None:
        if self.rho < 0:
            raise FieldError("rho", f"must be >= 0, got {self.rho}")
        for key in ("alignment_steps", "finetune_steps"):
            if getattr(self, key) < 0:
                raise FieldError(key, f"must be >= 0, got {getattr(self, key)}")
        if self.alignment_steps + self.finetune_steps == 0:
            raise FieldError("finetune_steps", "alignment_steps and finetune_steps are both 0")
        if not 0 <= self.proximal_after <= 1:
            raise FieldError("proximal_after", f"must be in [0, 1], got {self.proximal_after}")


class Lisa(Defense):
    """Alternates the batch source by step and adds the proximal term to either loss."""

    def after_model(self) -> None:
        run, s = self.run, self.settings
        self.trained = [p for p in run.peft_model.parameters() if p.requires_grad]
        self.anchor = [p.detach().clone() for p in self.trained]  # both states start here
        if run.total_steps <= s.alignment_steps:  # the official split assumes long runs
            # The run would train on the alignment set alone and return a model that never
            # saw the user's data (a bench run of 48 steps did: FA 0, every tweet refused).
            raise BDSInputError(
                f"defense lisa: all {run.total_steps} steps of this run fall in the first "
                f"alignment state (defense.alignment_steps {s.alignment_steps}), so no user "
                "sample would be trained on; set defense.alignment_steps and "
                "defense.finetune_steps for a run this short (e.g. 1 and 9: the official 1:9)"
            )

    def in_alignment_state(self, step: int) -> bool:
        s = self.settings
        return step % (s.alignment_steps + s.finetune_steps) < s.alignment_steps

    def batch(self, step: int) -> StepBatch:
        import torch

        aligning = self.in_alignment_state(step)
        if step > 0 and aligning != self.in_alignment_state(step - 1):
            for anchor, p in zip(self.anchor, self.trained, strict=True):  # a switch
                anchor.copy_(p.detach())
        if aligning:
            return StepBatch([], torch.tensor([], dtype=torch.long), self.run.align_batch(step))
        return super().batch(step)

    def objective(self, step: int, batch: StepBatch):
        run = self.run
        if batch.align:
            losses, _ = run.losses(batch.align, [])
            loss = losses.mean()
            stats = self.loss_stats(loss, batch, None, losses)
        else:
            losses, _ = run.losses(batch.user, [])
            loss = losses.mean()
            stats = self.loss_stats(loss, batch, losses, None)
        if step > self.settings.proximal_after * run.total_steps and self.settings.rho > 0:
            proximal = self.settings.rho / 2 * self.distance()
            loss = loss + proximal
            stats["loss"] = float(loss.detach())
            stats["proximal"] = float(proximal.detach())
        stats["alignment_state"] = float(bool(batch.align))
        return loss, stats

    def distance(self) -> Any:
        """||w - w_switch||^2 over the trainable weights (differentiable in w)."""
        return sum((p - a).pow(2).sum() for p, a in zip(self.trained, self.anchor, strict=True))

    def state_dict(self) -> dict[str, Any]:
        return {"anchor": [a.clone() for a in self.anchor]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for anchor, saved in zip(self.anchor, state["anchor"], strict=True):
            anchor.copy_(saved)
