"""Safe LoRA (Hsu et al., NeurIPS 2024): after fine-tuning, project the LoRA updates that
agree least with the alignment direction onto it.

For every matrix the adapter targets (q/k/v...), the alignment direction is what the
alignment changed, V = W_aligned - W_base, and

    C = V V^T / ||V||_F                                   (out x out)

(the official code's "projection": V V^T scaled by the Frobenius norm, not an orthogonal
projector). With the trained update dW = B A, its similarity to the alignment subspace is

    s = cos(C dW, dW)                                     (over all entries)

and a matrix whose s is at or below the threshold has its update replaced by the
projected one, B <- C B (so dW <- C dW); the others are left as trained.

The threshold: `select: number` (the official default) projects the `num_proj_layers` = 10
matrices of lowest s (threshold = the 10th smallest s; ties project more);
`select: threshold` projects every matrix with s <= `threshold` (official 0.5).

Faithful to IBM/SafeLoRA: config.py (`select_layers_type="number"`, `num_proj_layers=10`,
`threshold=0.5`) and model.py (`get_aligned_matrix`, `projected_weighted`: the cosine of
`P @ B @ A` with `B @ A`, `B <- P @ B` when it is <= the threshold). Unlike the official
loop, which pairs matrices by their order in two `named_parameters()` walks, matrices are
paired by name, and a matrix the alignment left unchanged (V = 0, no direction to project
on; the official code divides by zero) is an error rather than a NaN adapter.

Where the two models come from: the aligned model is the one the user's job fine-tunes
(`model.name`; its weights are the adapter's frozen base layers). The base (unaligned)
model is `base_model`, or, when that is null, the `base` a bds-aligned model records in
its bds_alignment.json (so `bds demo` needs no setting). Cost: loading the base model once
and, per targeted matrix, one (out x out) product: 9.2 s on the embedded default (90
matrices, 10 projected) on the 2-core CPU shared with 3 other sessions (in the summary).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from bds.defenses.base import Defense
from bds.defenses.registry import DefenseSettings, Stage
from bds.errors import BDSInputError, FieldError

ALIGNMENT_INFO_FILE = "bds_alignment.json"  # written by bds.align (not imported: torch-free)


@dataclass
class SafeLoRASettings(DefenseSettings):
    """base_model: the unaligned model (hub id or folder; null: the `base` recorded by a
    bds-aligned model); select: number (project the num_proj_layers least similar
    matrices) or threshold (project those with similarity <= threshold)."""

    stages: ClassVar[tuple[Stage, ...]] = ("post-fine-tuning",)
    name: str = "safe-lora"
    base_model: str | None = None
    select: Literal["number", "threshold"] = "number"
    num_proj_layers: int = 10
    threshold: float = 0.5

    def validate(self) -> None:
        if self.num_proj_layers < 1:
            raise FieldError("num_proj_layers", f"must be >= 1, got {self.num_proj_layers}")
        if not -1.0 <= self.threshold <= 1.0:
            raise FieldError("threshold", f"is a cosine: must be in [-1, 1], got {self.threshold}")


@dataclass
class Projected:
    """What Safe LoRA did to one matrix."""

    name: str
    similarity: float
    projected: bool


def alignment_projector(w_base: Any, w_aligned: Any) -> Any:
    """C = V V^T / ||V||_F with V = W_aligned - W_base (float32)."""
    v = w_aligned.float() - w_base.float()
    return (v @ v.T) / v.norm()


def similarity(projector: Any, lora_a: Any, lora_b: Any) -> float:
    """cos(C B A, B A) over all entries (0 for a zero update)."""
    import torch

    update = lora_b.float() @ lora_a.float()
    projected = projector @ update
    return float(torch.nn.functional.cosine_similarity(projected.flatten(), update.flatten(), 0))


def cutoff(similarities: list[float], settings: SafeLoRASettings) -> float:
    """The similarity at or below which an update is projected."""
    if settings.select == "threshold":
        return settings.threshold
    ranked = sorted(similarities)
    return ranked[min(settings.num_proj_layers, len(ranked)) - 1]


def project(
    layers: list[tuple[str, Any, Any, Any, Any]], settings: SafeLoRASettings
) -> list[Projected]:
    """Apply Safe LoRA in place to (name, W_base, W_aligned, lora_A weight, lora_B weight)
    tuples; returns each matrix's similarity and whether its update was projected."""
    import torch

    projectors, sims = [], []
    for name, w_base, w_aligned, a, b in layers:
        if w_base.shape != w_aligned.shape:
            raise BDSInputError(
                f"defense safe-lora: {name} is {tuple(w_base.shape)} in the base model but "
                f"{tuple(w_aligned.shape)} in the aligned one; defense.base_model must be "
                "the model the aligned one was trained from"
            )
        if torch.equal(w_base, w_aligned):
            raise BDSInputError(
                f"defense safe-lora: the alignment left {name} unchanged (no alignment "
                "direction to project on); target only matrices the alignment trained "
                "(train.lora.target_modules) or check defense.base_model"
            )
        projectors.append(alignment_projector(w_base, w_aligned).to(b.device))
        sims.append(similarity(projectors[-1], a, b))
    limit = cutoff(sims, settings)
    out = []
    with torch.no_grad():
        for (name, _, _, _, b), c, s in zip(layers, projectors, sims, strict=True):
            if s <= limit:
                b.copy_((c @ b.float()).to(b.dtype))
            out.append(Projected(name, s, s <= limit))
    return out


class SafeLoRA(Defense):
    """SFT on the user data, then the projection of the trained adapter (after_training)."""

    def before_model(self) -> None:
        self.base_name = self._base_model_name()  # a missing base fails before training

    def _base_model_name(self) -> str:
        if self.settings.base_model:
            return self.settings.base_model
        aligned = self.run.cfg.model.name
        info = Path(aligned).expanduser() / ALIGNMENT_INFO_FILE
        if info.is_file():
            return json.loads(info.read_text(encoding="utf-8"))["base"]
        raise BDSInputError(
            f"defense safe-lora needs the unaligned model the aligned one ({aligned}) was "
            "trained from: set defense.base_model to its hub id or folder"
        )

    def after_training(self, peft_model: Any) -> None:
        t0 = time.perf_counter()
        weights = self._base_weights(peft_model)
        layers = []
        for name, module in _lora_modules(peft_model):
            layers.append(
                (
                    name,
                    weights[name],
                    module.base_layer.weight.detach(),
                    module.lora_A["default"].weight.data,
                    module.lora_B["default"].weight.data,
                )
            )
        self.result = project(layers, self.settings)
        self.limit = cutoff([r.similarity for r in self.result], self.settings)
        self.seconds = time.perf_counter() - t0

    def _base_weights(self, peft_model: Any) -> dict[str, Any]:
        """The base model's weights of the adapted matrices, by module name."""
        import dataclasses

        from bds.models import load_model

        names = {name for name, _ in _lora_modules(peft_model)}
        model = load_model(dataclasses.replace(self.run.cfg.model, name=self.base_name))
        found = {n: m.weight.detach() for n, m in model.named_modules() if n in names}
        missing = sorted(names - set(found))
        if missing:
            raise BDSInputError(
                f"defense safe-lora: the base model {self.base_name} has no {missing[0]} "
                "(adapted in the aligned model); defense.base_model must be the model the "
                "aligned one was trained from"
            )
        return found

    def summary(self) -> dict[str, Any]:
        sims = [r.similarity for r in self.result]
        return {
            "base_model": self.base_name,
            "select": self.settings.select,
            "similarity_cutoff": round(self.limit, 6),
            "projected": sum(r.projected for r in self.result),
            "matrices": len(self.result),
            "similarity_min": round(min(sims), 6),
            "similarity_mean": round(sum(sims) / len(sims), 6),
            "projected_matrices": [r.name for r in self.result if r.projected],
            "seconds": round(self.seconds, 3),
        }


def _lora_modules(peft_model: Any) -> list[tuple[str, Any]]:
    """(name in the plain model, LoRA layer) for every layer holding the default adapter."""
    prefix = "base_model.model."
    return [
        (name.removeprefix(prefix), m)
        for name, m in peft_model.named_modules()
        if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})
    ]
