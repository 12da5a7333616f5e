"""Antidote (Huang et al. 2024, "Antidote: Post-fine-tuning safety alignment against
harmful fine-tuning"): after fine-tuning, zero the adapter weights most important to
harmful behaviour, measured on harmful samples. One shot, no training.

For every linear map of the adapter (each target module's lora_A and lora_B), with X_j
the j-th input feature of that map over every token of the harmful calibration set:

    importance_ij = |W_ij| * ||X_j||_2                    (Wanda's score)

and in every row i the top `dense_ratio` share of the coordinates by importance is set
to zero (per row: cols - int(cols * (1 - dense_ratio)) of them; ratio 0 prunes none).

Faithful to git-disl/Antidote: utils.py `prune_wanda_outlier` (importance from
`WrappedGPT.scaler_row`, the inputs' squared norms per column, of the modules `find_layers`
picks, i.e. the `lora` Linear layers; per-row stable sort, the lowest int(cols *
(1 - dense_ratio)) kept) and train.py (`param.data *= (1 - bad_mask)`), with dense_ratio
= 0.1 and 2000 harmful samples (script/finetune/antidote_poison_ratio.sh). Differences:
the calibration forward runs the whole model in batches with padding left out of the norms
instead of layer by layer on single samples (the same inputs reach every layer: nothing is
pruned until all scores are in), and the calibration samples come from a harmful pool
disjoint from the attack's samples and the evaluation prompts
(bds/defenses/leftover_harmful.py) where the official script draws both from BeaverTails'
unsafe set.

Embedded default: the pool is pyrit-harmful minus D_ft's samples and prompts (423 of 453
when measured, before the refusal judge's requests left pyrit-harmful, which now holds 280;
362 fit max_length 128, the other 61 are counted in the summary), fewer than the official
2000: all are used. Cost: one forward pass of the calibration set (seconds, in the
summary): 252 s on one CPU thread, where an SFT step took 4.8 s, so about 51 steps' worth,
0.64x the 75-step attack on top (benchmarks/results/defense_cost.json).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from bds.config import SourceConfig
from bds.defenses.base import Defense
from bds.defenses.registry import Data, DefenseSettings, Stage
from bds.errors import BDSInputError, FieldError


@dataclass
class AntidoteSettings(DefenseSettings):
    """dense_ratio: share of each adapter row pruned; samples: harmful calibration samples
    (at most; the pool may hold fewer); harmful: their source (null: data.harmful minus the
    attack's samples, see leftover_harmful.py)."""

    stages: ClassVar[tuple[Stage, ...]] = ("post-fine-tuning",)
    needs: ClassVar[frozenset[Data]] = frozenset({"user", "harmful"})
    name: str = "antidote"
    dense_ratio: float = 0.1
    samples: int = 2000
    harmful: SourceConfig | None = None

    def validate(self) -> None:
        if not 0.0 <= self.dense_ratio <= 1.0:
            raise FieldError("dense_ratio", f"must be in [0, 1], got {self.dense_ratio}")
        if self.samples < 1:
            raise FieldError("samples", f"must be >= 1, got {self.samples}")


def prune_mask(importance: Any, dense_ratio: float) -> Any:
    """True at the coordinates to zero: per row, all but the int(cols * (1 - dense_ratio))
    least important (ties: the earlier column counts as less important)."""
    import torch

    keep = int(importance.shape[1] * (1 - dense_ratio))
    order = torch.sort(importance, dim=1, stable=True).indices
    mask = torch.ones_like(importance, dtype=torch.bool)
    mask.scatter_(1, order[:, :keep], False)
    return mask


class _InputNorms:
    """Sum over calibration tokens of each input feature's square, for one Linear map."""

    def __init__(self, module: Any, mask: list[Any]):
        import torch

        self.sumsq = torch.zeros(module.in_features, device=module.weight.device)
        self.mask = mask  # [the current batch's attention mask], set by the caller
        self.handle = module.register_forward_hook(self._add)

    def _add(self, module: Any, inputs: Any, output: Any) -> None:
        x = inputs[0].float()
        keep = self.mask[0].bool()  # padding is no input
        self.sumsq += x[keep].pow(2).sum(dim=0)

    def importance(self, weight: Any) -> Any:
        return weight.float().abs() * self.sumsq.sqrt()[None, :]


class Antidote(Defense):
    """SFT on the user data, then one-shot pruning of the adapter (after_training)."""

    def before_model(self) -> None:
        from bds.defenses.leftover_harmful import leftover_harmful_pool

        # drawn before training, so a bad pool fails early (and the global RNG is untouched)
        self.pool = leftover_harmful_pool(self.run, self.settings.harmful, "antidote")
        n = min(self.settings.samples, len(self.pool.records))
        self.calibration = random.Random(self.run.tc.seed).sample(self.pool.records, n)

    def after_training(self, peft_model: Any) -> None:
        import torch

        from bds.data.tokenize import tokenize_records
        from bds.training.trainer import model_inputs

        t0 = time.perf_counter()
        run, d = self.run, self.run.cfg.data
        samples, report = tokenize_records(
            self.calibration, run.tokenizer, d.template, d.max_length, d.truncation
        )
        if not samples:
            raise BDSInputError(
                f"defense antidote: no harmful calibration sample fits data.max_length="
                f"{d.max_length}; raise it"
            )
        maps = _adapter_maps(peft_model)
        mask: list[Any] = [None]
        norms = {name: _InputNorms(linear, mask) for name, linear in maps.items()}
        was_training = peft_model.training
        peft_model.eval()  # no LoRA dropout: the inputs the adapter sees at inference
        try:
            with torch.no_grad(), run.accelerator.autocast():
                for start in range(0, len(samples), run.tc.batch_size):
                    batch = run.device_batch(samples[start : start + run.tc.batch_size])
                    mask[0] = batch["attention_mask"]
                    peft_model(**model_inputs(batch), logits_to_keep=1)
        finally:
            peft_model.train(was_training)
            for n in norms.values():
                n.handle.remove()
        pruned, total = 0, 0
        with torch.no_grad():
            for name, linear in maps.items():
                cut = prune_mask(norms[name].importance(linear.weight), self.settings.dense_ratio)
                linear.weight[cut] = 0
                pruned += int(cut.sum())
                total += cut.numel()
        self.stats = {
            "calibration_samples": len(samples),
            "calibration_truncation": report.to_dict(),
            "pruned_weights": pruned,
            "adapter_weights": total,
            "seconds": round(time.perf_counter() - t0, 3),
        }

    def summary(self) -> dict[str, Any]:
        return {
            "dense_ratio": self.settings.dense_ratio,
            "harmful_pool": self.pool.summary(),
            **self.stats,
        }


def _adapter_maps(peft_model: Any) -> dict[str, Any]:
    """Every Linear of the delivered adapter ("default"), by parameter-free module name."""
    maps = {}
    for name, module in peft_model.named_modules():
        for part in ("lora_A", "lora_B"):
            layers = getattr(module, part, None)
            if layers is not None and "default" in layers:
                maps[f"{name}.{part}"] = layers["default"]
    return maps
