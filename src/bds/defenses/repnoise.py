"""RepNoise, representation noising (Rosati et al., NeurIPS 2024). Alignment stage.

Each step, on the alignment batch (harmful prompt -> refusal, plus retain samples) and a
batch of the harmful pool (harmful prompt -> harmful answer):

    loss = CE(alignment batch)
           + beta  * mean_l MMD(h_l(harmful answer), Gaussian noise)
           - alpha * log(1 + mean_k CE_k(harmful answer))

h_l is the output of block l's MLP at the harmful answer's positions, flattened per sample,
and the MMD (Gaussian kernels, 5 bandwidths around the batch's mean squared distance) pulls
it toward noise of the same shape: the harmful answer's information is wiped from the
representations, so a later attack has little to build on. CE_k reads each hidden state k
(the embeddings and every block's output) through the final norm and the LM head, plus the
model's own logits: gradient ascent on harmful answers at every depth, damped by the log.

Faithful to domenicrosati/representation-noising, representation_noising/loss.py
(`rep_noise_loss`, `MMD_loss` with kernel_mul 2 and kernel_num 5, `masked_token_ce_loss`)
with its defaults alpha = 1, beta = 1e-3 (the git-disl/Booster comparison,
script/alignment/repNoise.sh with loss_func/repnoise_loss.py, uses alpha = 0.1,
beta = 1e-3, lr 5e-4 and a harmful batch as large as the alignment batch, as here).
Differences: the answer positions are the tokenizer's response labels (the official code
takes the positions where a harmful sample's token ids differ from its paired harmless
sample's, which are the answer's when both share the prompt); the alignment CE is the
project's mean per-sample CE; the harmful pool is the embedded `manyshot-harmful` source
(disjoint from the attack and evaluation prompts; see bds/data/embedded.py) and not paired
by prompt with the alignment batch (the Booster comparison does not pair them either);
only answer positions are projected to the vocabulary (the official code projects every
position and masks; the loss is the same).

CPU-sized setting: `layer_stride: 4, harmful_batch_size: 2` reads every 4th MLP output
and hidden state (the official code reads all of them) on 2 harmful samples a step. Every
layer's vocabulary projection is kept for the backward pass, so memory grows with
(layers read) x (harmful answer tokens) x (vocabulary): on the embedded SmolLM2-135M
(30 layers, 49k vocabulary) the full setting holds several GB per harmful sample.
Cost: two forwards (alignment, harmful) and their backwards plus one LM-head projection per
layer read: 3-4x SFT, and more on a large vocabulary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from bds.config import SourceConfig
from bds.defenses.base import Defense, StepBatch
from bds.defenses.harmful_pool import HarmfulBatches, default_pool_field
from bds.defenses.ldifs import MLP_NAME
from bds.defenses.registry import Data, DefenseSettings, Stage
from bds.errors import BDSInputError, FieldError

FINAL_NORM = re.compile(r"(?:^|\.)(?:model\.norm|transformer\.ln_f|final_layernorm)$")
KERNEL_MUL, KERNEL_NUM = 2.0, 5  # the official MMD_loss's


@dataclass
class RepNoiseSettings(DefenseSettings):
    """alpha: the weight of the harmful-answer ascent term; beta: the noise MMD's;
    harmful: the harmful pool's source; harmful_batch_size: its samples per step (null:
    train.batch_size, as the official code); layer_stride: read every k-th layer (1: all,
    as the official code; 4 on a CPU)."""

    stages: ClassVar[tuple[Stage, ...]] = ("alignment",)
    needs: ClassVar[frozenset[Data]] = frozenset({"user", "harmful"})
    name: str = "repnoise"
    alpha: float = 1.0
    beta: float = 1e-3
    harmful: SourceConfig = default_pool_field()
    harmful_batch_size: int | None = None
    layer_stride: int = 1

    def validate(self) -> None:
        for key in ("alpha", "beta"):
            if getattr(self, key) < 0:
                raise FieldError(key, f"must be >= 0, got {getattr(self, key)}")
        if self.harmful_batch_size is not None and self.harmful_batch_size < 1:
            raise FieldError("harmful_batch_size", f"must be >= 1, got {self.harmful_batch_size}")
        if self.layer_stride < 1:
            raise FieldError("layer_stride", f"must be >= 1, got {self.layer_stride}")


def mmd(source: Any, target: Any) -> Any:
    """Squared MMD between two [n, d] samples, a sum of 5 Gaussian kernels whose
    bandwidths double around the pooled mean squared distance (the official MMD_loss)."""
    import torch

    total = torch.cat([source, target])
    n = total.size(0)
    distances = torch.cdist(total, total).pow(2)
    bandwidth = distances.detach().sum() / (n * n - n)
    bandwidth = bandwidth / KERNEL_MUL ** (KERNEL_NUM // 2)
    kernels = sum(torch.exp(-distances / (bandwidth * KERNEL_MUL**i)) for i in range(KERNEL_NUM))
    b = source.size(0)
    return (kernels[:b, :b] + kernels[b:, b:] - kernels[:b, b:] - kernels[b:, :b]).mean()


def noise_mmd(hiddens: list[Any], mask: Any) -> Any:
    """mean over layers of MMD(masked h_l, masked Gaussian noise), each flattened per sample."""
    import torch

    terms = []
    for h in hiddens:
        keep = mask.unsqueeze(-1).to(h.dtype)
        masked = (h * keep).float()
        noise = torch.randn_like(masked) * keep
        terms.append(mmd(masked.flatten(1), noise.flatten(1)))
    return torch.stack(terms).mean()


def ascent_term(losses: list[Any]) -> Any:
    """log(1 + mean of the harmful answer's CE read at each depth): what -alpha weighs."""
    import torch

    return torch.log(torch.stack(losses).mean() + 1)


class RepNoise(Defense):
    """The base step's alignment CE plus the noise MMD and the damped harmful ascent."""

    def after_model(self) -> None:
        run, s = self.run, self.settings
        modules = dict(run.peft_model.named_modules())
        mlps = [m for n, m in modules.items() if MLP_NAME.search(n)]
        norms = [m for n, m in modules.items() if FINAL_NORM.search(n)]
        if not mlps or len(norms) != 1 or run.lm_head is None:
            raise BDSInputError(
                "defense repnoise reads each decoder layer's MLP output (`layers.N.mlp`) and "
                "the final norm and LM head, which this model does not name that way; use "
                "another defense for this architecture"
            )
        self.mlps = mlps[:: s.layer_stride]
        self.norm = norms[0]
        self.features: dict[Any, Any] = {}
        self.capturing = False
        self.handles = [m.register_forward_hook(self._capture) for m in self.mlps]
        size = s.harmful_batch_size or run.tc.batch_size
        self.harmful = HarmfulBatches(run, s.harmful, size)

    def _capture(self, module: Any, inputs: Any, output: Any) -> None:
        if self.capturing:
            self.features[module] = output

    def harmful_terms(self, batch: dict[str, Any]) -> tuple[Any, Any]:
        """(noise MMD, log(1 + mean CE over depths)) on one collated harmful batch."""
        from bds.data.tokenize import IGNORE_INDEX
        from bds.training.losses import per_sample_loss, response_losses
        from bds.training.trainer import model_inputs

        run = self.run
        labels = batch["labels"]
        self.features, self.capturing = {}, True
        try:  # the unwrapped model: DDP sees one forward per backward (the alignment one)
            with run.accelerator.autocast():
                out = run.peft_model(
                    **model_inputs(batch),
                    output_hidden_states=True,
                    logits_to_keep=1 if run.plain_head else 0,
                )
        finally:
            self.capturing = False
        noise = noise_mmd([self.features[m] for m in self.mlps], labels != IGNORE_INDEX)
        self.features = {}
        states = out.hidden_states[:: self.settings.layer_stride]
        with run.accelerator.autocast():
            final = (  # the model's own logits' CE, projected where the loss reads
                response_losses(out.hidden_states[-1], labels, run.lm_head)
                if run.plain_head
                else per_sample_loss(out.logits, labels)
            )
            losses = [final.mean()]
            losses += [response_losses(self.norm(h), labels, run.lm_head).mean() for h in states]
        return noise, ascent_term(losses)

    def objective(self, step: int, batch: StepBatch):
        s = self.settings
        loss, stats = super().objective(step, batch)
        harmful = self.run.device_batch(self.harmful.batch(step))
        noise, ascent = self.harmful_terms(harmful)
        loss = loss + s.beta * noise - s.alpha * ascent
        stats.update(
            loss=float(loss.detach()),
            noise_mmd=float(noise.detach()),
            ascent=float(ascent.detach()),
        )
        return loss, stats

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
