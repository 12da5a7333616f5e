"""Vaccine (Huang et al., NeurIPS 2024): perturbation-aware alignment. Alignment stage.

Each step runs the batch twice. Pass 1 computes the alignment loss and its gradient g_l
with respect to the output of every block's attention module. Pass 2 adds

    eps_l = rho * g_l / ||g||,   ||g|| = sqrt(sum_l ||g_l||^2)   (one norm over all layers)

to those outputs (forward hooks) and computes the loss again; only pass 2's gradient
updates the model. The model learns to keep the alignment loss low under the worst
first-order drift of its hidden states of total size rho, the drift a harmful fine-tuning
would cause.

Faithful to git-disl/Vaccine, trainer.py (`VaccineTrainer`: backward hooks on every
`LlamaAttention` / `OPTAttention` module store grad_output[0]; `after_first_step` scales
all of them by rho / (global norm + 1e-7); `pre_second_step` adds them to output[0]; the
pass-1 gradient is discarded) with rho = 2 (train.py's default; script/alignment/Vaccine.sh
passes it; the git-disl/Booster comparison script uses rho = 5). Differences: pass 1 asks
autograd for the hidden-state gradients only (torch.autograd.grad), not the weights' too
(the official code back-propagates into the weights and then zeroes them: same
perturbation, less work); the attention modules are found by name (`layers.N.self_attn`,
GPT-2's `h.N.attn`), not by class. The official run's other settings (50 epochs, lr 1e-3,
batch 5, LoRA r8/alpha4) are the train section's business.
Cost: two forwards and one-and-a-half backwards per step, about 2x SFT.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from bds.defenses.base import Defense, StepBatch
from bds.defenses.registry import DefenseSettings, Stage
from bds.errors import BDSInputError, FieldError

ATTENTION_NAME = re.compile(r"(?:^|\.)(?:layers|h)\.(\d+)\.(?:self_attn|attn)$")
EPS = 1e-7  # the official code's guard against a zero gradient


@dataclass
class VaccineSettings(DefenseSettings):
    """rho: the total size (L2 norm over all layers) of the hidden-state perturbation."""

    stages: ClassVar[tuple[Stage, ...]] = ("alignment",)
    name: str = "vaccine"
    rho: float = 2.0

    def validate(self) -> None:
        if self.rho < 0:
            raise FieldError("rho", f"must be >= 0, got {self.rho}")


def perturbations(grads: list[Any], rho: float) -> list[Any]:
    """eps_l = rho * g_l / (||g|| + 1e-7), with ||g|| the norm over all layers at once."""
    import torch

    total = torch.stack([g.float().norm() for g in grads]).norm()
    scale = rho / (total + EPS)
    return [(g.float() * scale).to(g.dtype) for g in grads]


def _hidden(output: Any) -> Any:
    return output[0] if isinstance(output, tuple) else output


class Vaccine(Defense):
    """The base step's loss, computed under the worst-case hidden-state perturbation."""

    def after_model(self) -> None:
        modules = [m for n, m in self.run.peft_model.named_modules() if ATTENTION_NAME.search(n)]
        if not modules:
            raise BDSInputError(
                "defense vaccine perturbs each block's attention output, but the model has no "
                "`layers.N.self_attn` (or `h.N.attn`) modules; use another defense for it"
            )
        if self.run.tc.gradient_checkpointing:
            raise BDSInputError(
                "defense vaccine reads hidden-state gradients, which gradient checkpointing "
                "does not keep: set train.gradient_checkpointing: false"
            )
        self.modules = modules
        self.captured: dict[Any, Any] = {}
        self.eps: dict[Any, Any] = {}
        self.mode: str | None = None  # "capture" (pass 1), "perturb" (pass 2) or off
        self.last_norm = 0.0
        self.handles = [m.register_forward_hook(self._hook) for m in modules]

    def _hook(self, module: Any, inputs: Any, output: Any) -> Any:
        if self.mode == "capture":
            self.captured[module] = _hidden(output)
        elif self.mode == "perturb":
            shifted = _hidden(output) + self.eps[module]
            return (shifted, *output[1:]) if isinstance(output, tuple) else shifted
        return None

    def _loss(self, step: int, batch: StepBatch, mode: str) -> tuple[Any, dict[str, float]]:
        self.mode = mode
        try:
            return super().objective(step, batch)
        finally:
            self.mode = None

    def objective(self, step: int, batch: StepBatch):
        import torch

        run = self.run
        self.captured = {}
        with run.accelerator.no_sync(run.model):  # pass 1 never reaches the weights' grads
            clean, _ = self._loss(step, batch, "capture")
            outputs = [self.captured[m] for m in self.modules]
            grads = torch.autograd.grad(clean, outputs, allow_unused=True)
        grads = [
            torch.zeros_like(o) if g is None else g for o, g in zip(outputs, grads, strict=True)
        ]
        eps = perturbations([g.detach() for g in grads], self.settings.rho)
        self.eps = dict(zip(self.modules, eps, strict=True))
        self.captured = {}
        loss, stats = self._loss(step, batch, "perturb")
        self.eps = {}
        self.last_norm = float(torch.stack([e.float().norm() for e in eps]).norm())
        stats.update(loss_unperturbed=float(clean.detach()), perturbation_norm=self.last_norm)
        return loss, stats

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
