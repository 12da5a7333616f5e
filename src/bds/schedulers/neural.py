"""The amortized Bayesian neural scheduler: a text encoder + linear head scores each sample.

Same objective as the scalar scheduler (schedulers/scalar.py), with the logits
z_i = head(encoder(text_i)) instead of free parameters, so a trained scheduler scores
data it has never seen ("transfer", `bds audit`).

Cost per step is O(batch): the batch's texts are encoded once (in `weights`, and that graph
is reused by `update`), never the whole dataset. The dataset-wide softmax needs every
sample's logit; a memory holds each sample's latest logit (unscored samples stand at the
mean of those scored), so the normaliser is O(N) floats. The memory estimator of the data
term (per-sample loss memory) works as in the scalar scheduler; only the batch's logits
carry gradient, so the encoder/head gradient is the batch's share of the full one.
Every sample is re-scored every `refresh_steps` steps (and at the end, for the table).

With `train: head` the encoder is frozen and each sample's embedding is computed once and
cached: after the first epoch a step costs no encoder pass at all.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bds.errors import BDSInputError
from bds.io import atomic_directory
from bds.schedulers.config import SchedulerConfig
from bds.schedulers.encoder import TextEncoder
from bds.schedulers.sgld import build_optimizer
from bds.schedulers.state import check_checkpoint
from bds.schedulers.transforms import remembered_losses, weights_from_logits, with_priors

SAVED_FORMAT = "bds-neural-scheduler"
SAVED_CONFIG = "scheduler.json"
HEAD_FILE = "head.safetensors"
ENCODER_SUBDIR = "encoder"


class NeuralScheduler:
    """Weights for the N samples whose texts are given, addressed by position 0..N-1."""

    def __init__(
        self, texts: Sequence[str], cfg: SchedulerConfig, encoder: TextEncoder | None = None
    ):
        self.texts = list(texts)
        self.n = len(self.texts)
        self.cfg = cfg
        ns = cfg.neural
        self.settings = ns
        # Where the encoder comes from; `inline`: the saved folder must carry its weights.
        self.encoder_ref, self.encoder_inline = ns.encoder, False
        if ns.init_from:
            self.encoder, self.head, saved = load_saved(ns.init_from)
            self.encoder_ref = saved["encoder_path"]
            self.encoder_inline = saved["encoder"] == ENCODER_SUBDIR
            if saved["transform"] != cfg.transform:
                raise BDSInputError(
                    f"{ns.init_from}: the saved scheduler uses transform {saved['transform']!r}, "
                    f"this run {cfg.transform!r}; set defense.scheduler.transform to match"
                )
        else:
            self.encoder = encoder or TextEncoder.load(ns.encoder, ns.max_length)
            self.head = torch.nn.Linear(self.encoder.dim, 1)
            with torch.no_grad():  # every weight starts at the scalar scheduler's start
                self.head.weight.zero_()
                self.head.bias.fill_(float(cfg.init_logit))
        self.frozen = ns.frozen
        self.device = torch.device("cpu")
        self.encoder_trained = not self.frozen and ns.train in ("lora", "full")
        if self.encoder_trained and ns.train == "lora":
            self._add_lora()
        self._set_trainable()

        # Frozen encoder: each sample's embedding is computed once (lazily) and kept.
        self.cache = None if self.encoder_trained else torch.zeros(self.n, self.encoder.dim)
        self.cached = torch.zeros(self.n, dtype=torch.bool)
        self.logit_memory = torch.full((self.n,), float(cfg.init_logit))
        self.scored = torch.zeros(self.n, dtype=torch.bool)
        self.loss_memory = torch.zeros(self.n)
        self.seen = torch.zeros(self.n, dtype=torch.bool)
        self.step_count = 0
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.weight_sum = torch.zeros(self.n, dtype=torch.float64)
        self.weight_count = 0
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None
        params = self._trainable_params()
        self.optimizer = None
        if params and not self.frozen:
            # Adam for the MAP point; pSGLD (drift and noise on the energy's own scale,
            # T / N, as the scalar scheduler) for posterior samples of the head / encoder
            self.optimizer = build_optimizer(params, cfg, self.n, self.generator)
        # A trained scorer: the dataset softmax needs all its scores, computed on first use
        # (after `to(device)`, and not at all when a checkpoint restores the memory).
        self._needs_refresh = bool(ns.init_from)

    # ---------------------------------------------------------------- set-up ------------

    def _add_lora(self) -> None:
        from peft import LoraConfig, get_peft_model

        ns = self.settings
        lora = LoraConfig(
            r=ns.lora_r, lora_alpha=ns.lora_alpha, target_modules=list(ns.lora_target_modules)
        )
        try:
            self.encoder.model = get_peft_model(self.encoder.model, lora)
        except ValueError as exc:
            raise BDSInputError(
                f"defense.scheduler.neural.lora_target_modules: {str(exc).splitlines()[0]}"
            ) from None

    def _set_trainable(self) -> None:
        mode = self.settings.train
        for name, p in self.encoder.model.named_parameters():
            p.requires_grad_(self.encoder_trained and (mode == "full" or "lora_" in name))
        for p in self.head.parameters():
            p.requires_grad_(not self.frozen)
        # No dropout even when training: the weights fed to the model stay deterministic.
        self.encoder.model.eval()

    def _named_trainable(self) -> list[tuple[str, torch.nn.Parameter]]:
        named = [(f"head.{k}", p) for k, p in self.head.named_parameters() if p.requires_grad]
        named += [
            (f"encoder.{k}", p) for k, p in self.encoder.model.named_parameters() if p.requires_grad
        ]
        return named

    def _trainable_params(self) -> list[dict[str, Any]]:
        groups = []
        head = [p for p in self.head.parameters() if p.requires_grad]
        if head:
            groups.append({"params": head, "lr": self.cfg.lr})
        enc = [p for p in self.encoder.model.parameters() if p.requires_grad]
        if enc:
            groups.append({"params": enc, "lr": self.settings.encoder_lr})
        return groups

    # ---------------------------------------------------------------- scoring -----------

    def to(self, device: Any) -> NeuralScheduler:
        """Run the encoder and head on `device` (the memories stay on the CPU)."""
        self.encoder.model.to(device)
        self.head.to(device)
        self.device = torch.device(device)
        return self

    def _embed(self, index: torch.Tensor, grad: bool) -> torch.Tensor:
        if self.cache is None:
            with torch.set_grad_enabled(grad):
                return self.encoder([self.texts[i] for i in index.tolist()])
        missing = [i for i in index.tolist() if not self.cached[i]]
        if missing:
            with torch.no_grad():
                self.cache[missing] = self.encoder([self.texts[i] for i in missing]).cpu()
            self.cached[missing] = True
        return self.cache[index]

    def _logits(self, index: torch.Tensor, grad: bool) -> torch.Tensor:
        emb = self._embed(index, grad).to(self.device)
        with torch.set_grad_enabled(grad):
            return self.head(emb).squeeze(-1).float().cpu()

    @torch.no_grad()
    def refresh(self) -> None:
        """Re-score every sample (O(N) encoder passes, or head passes on cached embeddings)."""
        size = self.settings.score_batch_size
        for start in range(0, self.n, size):
            index = torch.arange(start, min(start + size, self.n))
            self.logit_memory[index] = self._logits(index, grad=False).float()
        self.scored[:] = True
        self._needs_refresh = False

    def _memory(self) -> torch.Tensor:
        """Every sample's latest logit; unscored ones at the mean of the scored."""
        if self._needs_refresh:
            self.refresh()
        if self.scored.all() or not self.scored.any():
            return self.logit_memory.clone()
        fill = self.logit_memory[self.scored].mean()
        return torch.where(self.scored, self.logit_memory, fill)

    def _batch_weights(self, index: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Weights of the batch from its fresh logits z (differentiable in z)."""
        if self.cfg.transform != "softmax":
            return weights_from_logits(z, self.cfg.transform)
        if self.settings.normalize == "batch":
            return weights_from_logits(z, "softmax")
        full = torch.index_put(self._memory(), (index,), z)
        return weights_from_logits(full, "softmax")[index]

    # ---------------------------------------------------------------- reading -----------

    def weights(self, index: torch.Tensor) -> torch.Tensor:
        """Weights of the samples at `index`, detached. Encodes the batch once; `update`
        on the same index reuses that graph."""
        if self.frozen:
            return self.all_weights()[index]
        z = self._logits(index, grad=True)
        self._pending = (index.clone(), z)
        with torch.no_grad():
            self.logit_memory[index] = z.detach().float()
            self.scored[index] = True
            return self._batch_weights(index, z.detach()).detach().clone()

    @torch.no_grad()
    def all_weights(self) -> torch.Tensor:
        """Weights of all N samples from the logit memory (N * softmax over the dataset under
        softmax, whatever `normalize` is); O(N) floats, no encoder pass."""
        return weights_from_logits(self._memory(), self.cfg.transform).detach().clone()

    def all_logits(self) -> torch.Tensor:
        return self._memory()

    def reported_weights(self) -> torch.Tensor:
        """The weights table: SGLD's running mean, else every sample scored now."""
        if self.cfg.inference == "sgld" and self.weight_count > 0:
            return (self.weight_sum / self.weight_count).float()
        self.refresh()
        return self.all_weights()

    # ---------------------------------------------------------------- updating ----------

    def energy(self, index: torch.Tensor, losses: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """U for one batch, differentiable in the batch logits z (see scalar.py for U)."""
        batch_only = self.cfg.estimator == "batch" or (
            self.cfg.transform == "softmax" and self.settings.normalize == "batch"
        )
        if batch_only:  # mean over the batch; priors on the batch logits, same per-logit scale
            w = self._batch_weights(index, z)
            return with_priors((w * losses).mean(), z, w, self.cfg, len(z))
        # A sample twice in one batch (an epoch boundary) counts once, as in the scalar scheduler.
        first = _first_occurrences(index)
        index, z, losses = index[first], z[first], losses[first]
        remembered = remembered_losses(self.loss_memory, self.seen, index, losses)
        full = torch.index_put(self._memory(), (index,), z)
        w = weights_from_logits(full, self.cfg.transform)
        return with_priors((w * remembered).mean(), full, w, self.cfg, self.n)

    def update(
        self, index: torch.Tensor, losses: torch.Tensor, record_average: bool = False
    ) -> float:
        """One step on batch samples `index` with detached per-sample losses. Returns U."""
        u_value = 0.0
        if not self.frozen:
            pending, self._pending = self._pending, None
            if pending is not None and torch.equal(pending[0], index):
                z = pending[1]
            else:  # another rank's samples are in the gathered batch: encode them here
                z = self._logits(index, grad=True)
            u = self.energy(index, losses.detach().float(), z)
            u.backward()
            self.optimizer.step()  # pSGLD adds its own noise
            self.optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                self.logit_memory[index] = z.detach().float()
                self.scored[index] = True
            u_value = float(u.detach())
        self.step_count += 1
        every = self.settings.refresh_steps
        if every and self.step_count % every == 0:
            self.refresh()
        if record_average:
            self.weight_sum += self.all_weights().double()
            self.weight_count += 1
        return u_value

    # ---------------------------------------------------------------- state -------------

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "trainable": {k: p.detach().clone() for k, p in self._named_trainable()},
            "logit_memory": self.logit_memory.clone(),
            "scored": self.scored.clone(),
            "loss_memory": self.loss_memory.clone(),
            "seen": self.seen.clone(),
            "cached": self.cached.clone(),
            "step_count": self.step_count,
            "generator": self.generator.get_state(),
            "weight_sum": self.weight_sum.clone(),
            "weight_count": self.weight_count,
        }
        if self.cache is not None:
            state["cache"] = self.cache.clone()
        if self.optimizer is not None:  # a copy: Adam's state tensors are updated in place
            state["optimizer"] = copy.deepcopy(self.optimizer.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        expected = {k for k, _ in self._named_trainable()}
        same_kind = "logit_memory" in state and set(state.get("trainable", {})) == expected
        check_checkpoint(same_kind, state["logit_memory"].numel() if same_kind else 0, self.n)
        with torch.no_grad():
            for k, p in self._named_trainable():
                p.copy_(state["trainable"][k])
        for key in ("logit_memory", "scored", "loss_memory", "seen", "cached", "weight_sum"):
            setattr(self, key, state[key].clone())
        if self.cache is not None and "cache" in state:
            self.cache = state["cache"].clone()
        self._needs_refresh = False
        self.step_count = int(state["step_count"])
        self.weight_count = int(state["weight_count"])
        self.generator.set_state(state["generator"])
        if self.optimizer is not None and "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])

    def save(self, folder: str | Path) -> Path:
        """A self-contained scheduler folder: scheduler.json + head.safetensors, plus the
        encoder (merged if LoRA) when it was trained, else a reference to it."""
        from safetensors.torch import save_file

        folder = Path(folder)
        with atomic_directory(folder) as tmp:
            save_file(
                {k: v.detach().contiguous() for k, v in self.head.state_dict().items()},
                tmp / HEAD_FILE,
            )
            encoder_ref = self.encoder_ref
            if Path(encoder_ref).exists():  # a local folder: usable from any directory
                encoder_ref = str(Path(encoder_ref).resolve())
            if self.encoder_trained or self.encoder_inline:
                model = self.encoder.model
                if self.encoder_trained and self.settings.train == "lora":
                    model = copy.deepcopy(model).merge_and_unload()
                model.save_pretrained(tmp / ENCODER_SUBDIR, safe_serialization=True)
                self.encoder.tokenizer.save_pretrained(tmp / ENCODER_SUBDIR)
                encoder_ref = ENCODER_SUBDIR
            meta = {
                "format": SAVED_FORMAT,
                "version": 1,
                "encoder": encoder_ref,
                "max_length": self.encoder.max_length,
                "dim": self.encoder.dim,
                "pooling": "mean, unit norm",
                "text": "instruction, input and response joined by newlines",
                "transform": self.cfg.transform,
                "init_logit": self.cfg.init_logit,
                "trained_steps": self.step_count,
                "train": self.settings.train,
            }
            (tmp / SAVED_CONFIG).write_text(json.dumps(meta, indent=2))
        return folder


def saved_meta(folder: str | Path) -> dict[str, Any]:
    """The metadata of a saved scheduler folder (checked; nothing loaded)."""
    folder = Path(folder)
    meta_path = folder / SAVED_CONFIG
    if not meta_path.is_file():
        raise BDSInputError(
            f"{folder}: not a saved neural scheduler (no {SAVED_CONFIG}); give the `scheduler/` "
            "folder of a run trained with defense bds-neural"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != SAVED_FORMAT:
        raise BDSInputError(
            f"{meta_path}: format {meta.get('format')!r}, expected {SAVED_FORMAT!r}"
        )
    ref = meta["encoder"]
    meta["encoder_path"] = str(folder / ref) if ref == ENCODER_SUBDIR else ref
    return meta


def load_saved(folder: str | Path) -> tuple[TextEncoder, torch.nn.Linear, dict[str, Any]]:
    """Encoder, head and metadata of a saved scheduler folder."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = saved_meta(folder)
    encoder = TextEncoder.load(meta["encoder_path"], meta["max_length"])
    head = torch.nn.Linear(encoder.dim, 1)
    head.load_state_dict(load_file(folder / HEAD_FILE))
    encoder.model.eval()
    return encoder, head, meta


@torch.no_grad()
def score_texts(
    encoder: TextEncoder,
    head: torch.nn.Linear,
    texts: Sequence[str],
    batch_size: int = 32,
    desc: str | None = None,
) -> torch.Tensor:
    """Logits of `texts` under a saved scheduler (no training), on the CPU; a progress bar
    when `desc` is given."""
    from tqdm.auto import tqdm

    out = []
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=desc is None):
        out.append(head(encoder(texts[start : start + batch_size])).squeeze(-1).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def _first_occurrences(index: torch.Tensor) -> torch.Tensor:
    """Positions of the first occurrence of each distinct value of `index`, in order."""
    seen: set[int] = set()
    keep = []
    for pos, i in enumerate(index.tolist()):
        if i not in seen:
            seen.add(i)
            keep.append(pos)
    return torch.tensor(keep, dtype=torch.long)
