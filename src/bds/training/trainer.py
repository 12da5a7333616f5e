"""Defended fine-tuning with the Bayesian Data Scheduler, on accelerate.

One step, in every mode (`train.mode`):
  1. take a user batch (and, in bds/mix, an alignment batch) - deterministic in the step;
  2. read the user samples' weights from the scheduler, without gradient;
  3. update the model on  mean CE(alignment) + mean_i(w_i * l_i(user));
  4. update the scheduler on the detached per-sample losses, gathered from all ranks so
     every rank applies the same update and holds the same weights.

accelerate provides devices, DDP, mixed precision, gradient accumulation and trackers;
PEFT the LoRA adapter(s); checkpointing is in checkpoint.py (see why there).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bds.config import RunConfig
from bds.data.pipeline import PreparedData, prepare_data
from bds.data.tokenize import TokenizedSample, TruncationReport, tokenize_records
from bds.errors import BDSInputError, Interrupted
from bds.io import atomic_directory, write_json
from bds.schedulers.factory import build_scheduler
from bds.training import checkpoint as ckpt
from bds.training.batching import StepSampler, collate
from bds.training.config import TrainConfig
from bds.training.conflict import ConflictDrive, ConflictProbe
from bds.training.guard import InterruptAtStepEnd, check_finite
from bds.training.losses import (
    per_sample_loss,
    positions_to_keep,
    response_losses,
    weighted_objective,
)
from bds.training.outputs import package_versions, weight_summary, write_weights_table

REFERENCE_ADAPTER = "reference"  # theta_ref of the safety-agnostic term


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    summary: dict[str, Any]


def train(
    cfg: RunConfig,
    output_dir: str | Path,
    *,
    model: Any = None,
    tokenizer: Any = None,
    data: PreparedData | None = None,
    until_step: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune `cfg.model` on `cfg.data` as `cfg.train` says; resume if a checkpoint exists.

    `model`/`tokenizer`/`data` override what the config would load (tests, benchmarks).
    `until_step` stops early after saving a checkpoint (a scheduled interruption); calling
    again resumes from it.
    """
    from bds.lock import folder_lock
    from bds.outdir import check_output_dir

    output_dir = check_output_dir(output_dir)  # before any slow work
    # rank 0 holds the folder's lock for all ranks
    lock = folder_lock(output_dir, note=_note) if _is_main_rank() else contextlib.nullcontext()
    with InterruptAtStepEnd() as interrupt, lock:
        return _Run(cfg, output_dir, model, tokenizer, data, progress).run(until_step, interrupt)


def _is_main_rank() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0


def _note(message: str) -> None:
    import sys

    print(message, file=sys.stderr)


def _allow_new_accelerator_settings() -> None:
    """Let one process run several trainings with different precisions (align, then attack).

    accelerate keeps one global state and refuses a second Accelerator with other settings;
    outside a multi-process launch nothing else depends on it, so it is reset.
    """
    import os

    from accelerate.state import AcceleratorState, PartialState

    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        AcceleratorState._reset_state(reset_partial_state=True)
        PartialState._reset_state()


def _check_room(output_dir: Path, model: Any) -> None:
    """Refuse before training when the disk cannot hold the adapter and a checkpoint
    (adapter twice, AdamW's two moments: about 4 x 4 bytes per trainable parameter)."""
    from bds.outdir import MB, check_free_space

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    check_free_space(output_dir, 16 * trainable + 16 * MB)


def _copy_adapter(peft_model: Any, source: str, target: str) -> None:
    """Start adapter `target` from `source`'s weights. theta_ref must share theta's init:
    from its own random init, l_i - l_i(theta_ref) measures how fast each sample is learned
    from two different starts (learnability), not what the alignment batch changes."""
    params = dict(peft_model.named_parameters())
    with torch.no_grad():
        for name, p in params.items():
            if f".{target}." in name:
                p.copy_(params[name.replace(f".{target}.", f".{source}.")])


def _shares(totals: dict[str, float]) -> dict[str, float]:
    """Each source's share of the weight applied over all steps (SFT: its share of D_ft)."""
    whole = sum(totals.values())
    return {k: round(v / whole, 6) for k, v in sorted(totals.items())} if whole else {}


def _model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the model's forward takes from a collated batch (labels stay with the loss)."""
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


class _Run:
    def __init__(self, cfg, output_dir, model, tokenizer, data, progress):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.cfg = cfg
        self.tc: TrainConfig = cfg.train
        self.output_dir = output_dir
        self.progress = progress
        _allow_new_accelerator_settings()
        from bds.precision import resolve_mixed_precision

        self.precision, self.precision_reason = resolve_mixed_precision(self.tc.mixed_precision)
        self.accelerator = Accelerator(
            mixed_precision=self.precision,
            gradient_accumulation_steps=self.tc.gradient_accumulation_steps,
            log_with=self.tc.report_to or None,
            project_dir=str(output_dir),
        )
        set_seed(self.tc.seed)
        world = self.accelerator.num_processes
        for key in ("batch_size", "alignment_batch_size"):
            if getattr(self.tc, key) % world:
                raise BDSInputError(
                    f"train.{key}={getattr(self.tc, key)} must be divisible by the {world} processes"
                )

        if tokenizer is None:
            from bds.models import load_tokenizer

            tokenizer = load_tokenizer(cfg.model)
        self.tokenizer = tokenizer
        self.data = data if data is not None else prepare_data(cfg.data)
        d = cfg.data
        self.user, self.user_report = tokenize_records(
            self.data.finetune, tokenizer, d.template, d.max_length, d.truncation
        )
        self.align: list[TokenizedSample] = []
        self.align_report: TruncationReport | None = None
        if self.tc.uses_alignment:
            if not self.data.alignment:
                raise BDSInputError(
                    f"train.mode={self.tc.mode} needs an alignment set: set data.alignment"
                )
            self.align, self.align_report = tokenize_records(
                self.data.alignment, tokenizer, d.template, d.max_length, d.truncation
            )
        if progress:  # truncation and drops are never silent
            self.accelerator.print(f"D_ft: {self.user_report.summary()}")
            if self.align_report is not None:
                self.accelerator.print(f"D_safe: {self.align_report.summary()}")
        if not self.user or (self.tc.uses_alignment and not self.align):
            raise BDSInputError(
                f"no sample fits data.max_length={d.max_length}; raise it or check the data"
            )

        n_user = len(self.user)
        self.total_steps = self.tc.max_steps or math.ceil(
            self.tc.epochs * n_user / self.tc.batch_size
        )
        self.user_sampler = StepSampler(n_user, self.tc.batch_size, self.tc.seed)
        self.align_sampler = StepSampler(
            max(len(self.align), 1), self.tc.alignment_batch_size, self.tc.seed + 1
        )
        self.scheduler = (
            build_scheduler(
                self.tc.scheduler,
                [s.id for s in self.user],
                self.data.finetune,
                self.accelerator.device,
            )
            if self.tc.uses_scheduler
            else None
        )
        self.conflict = ConflictDrive(n_user) if self.tc.drive == "conflict" else None
        # total weight each source received over the steps (its share of the training pull)
        self.applied_weight: dict[str, float] = {}
        self.average_from = self.total_steps - self.tc.scheduler.average_last
        self.trajectory: dict[int, list[float]] = {}
        self.plain_head: bool | None = None  # decided on the first batch (_head_is_plain)

        if self.accelerator.is_main_process:  # a folder of another run is refused here
            from bds.run_identity import run_identity, start_run

            start_run(output_dir, run_identity(cfg, self.data, model, tokenizer), note=_note)
        self._build_model(model)
        _check_room(self.output_dir, self.peft_model)

    # ---------------------------------------------------------------- set-up ------------

    def _build_model(self, model: Any) -> None:
        from peft import LoraConfig, get_peft_model
        from transformers import get_scheduler

        if model is None:
            from bds.models import load_model

            model = load_model(self.cfg.model)
        if self.tc.attn_implementation:
            try:
                model.set_attn_implementation(self.tc.attn_implementation)
            except (ValueError, ImportError) as exc:
                raise BDSInputError(f"train.attn_implementation: {exc}".split("\n")[0]) from None
        lora = self.tc.lora
        lora_cfg = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            task_type="CAUSAL_LM",
        )
        if self.tc.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.enable_input_require_grads()
        try:
            peft_model = get_peft_model(model, lora_cfg)
        except ValueError as exc:
            raise BDSInputError(f"train.lora.target_modules: {exc}".split("\n")[0]) from None
        self.ref_optimizer = None
        if self.tc.safety_agnostic:
            peft_model.add_adapter(REFERENCE_ADAPTER, lora_cfg)
            _copy_adapter(peft_model, "default", REFERENCE_ADAPTER)
            self._activate("default", peft_model)
        params = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.tc.lr, weight_decay=self.tc.weight_decay)
        lr_scheduler = get_scheduler(
            self.tc.lr_schedule,
            optimizer,
            num_warmup_steps=self.tc.warmup_steps,
            num_training_steps=self.total_steps,
        )
        self.model, self.optimizer, self.lr_scheduler = self.accelerator.prepare(
            peft_model, optimizer, lr_scheduler
        )
        self.peft_model = self.accelerator.unwrap_model(self.model)
        self.lm_head = self.peft_model.get_output_embeddings()
        self.probe = (
            ConflictProbe(self.peft_model, horizon=self._conflict_horizon())
            if self.tc.drive == "conflict"
            else None
        )
        if self.tc.safety_agnostic:
            ref_params = [
                p for n, p in self.peft_model.named_parameters() if f".{REFERENCE_ADAPTER}." in n
            ]
            self.ref_optimizer = torch.optim.AdamW(
                ref_params, lr=self.tc.lr, weight_decay=self.tc.weight_decay
            )

    def _activate(self, adapter: str, peft_model: Any = None) -> None:
        """Make `adapter` the one used in forward passes and the only trainable one."""
        peft_model = peft_model or self.peft_model
        peft_model.set_adapter(adapter)
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.requires_grad_(f".{adapter}." in name)

    # ---------------------------------------------------------------- the loop ----------

    def run(
        self, until_step: int | None, interrupt: InterruptAtStepEnd | None = None
    ) -> TrainResult:
        acc = self.accelerator
        start = self._resume()
        if self.tc.report_to:
            from bds.config import flat_config

            acc.init_trackers("bds", config=flat_config(self.cfg))  # the whole config
        stop = min(self.total_steps, until_step) if until_step is not None else self.total_steps
        log_path = self.output_dir / "train_log.jsonl"
        from tqdm.auto import tqdm

        bar = tqdm(
            total=self.total_steps,
            initial=start,
            desc=f"train ({self.tc.mode})",
            disable=not (self.progress and acc.is_main_process),
        )
        self.model.train()
        t0, step_times = time.perf_counter(), []
        if interrupt is not None:
            interrupt.armed = True  # from here on Ctrl-C stops at a step's end
        for step in range(start, stop):
            ts = time.perf_counter()
            stats = self.step(step)
            step_times.append(time.perf_counter() - ts)
            done = step + 1
            check_finite(done, stats, self._last_weights, self.output_dir, bar.close)
            if self.scheduler is not None and (
                done % self.tc.trajectory_steps == 0 or done == self.total_steps
            ):
                self.trajectory[done] = self.scheduler.all_weights().tolist()
            if done % self.tc.log_steps == 0 or done == self.total_steps:
                record = {
                    "step": done,
                    "lr": self.lr_scheduler.get_last_lr()[0],
                    **stats,
                    **self._weight_stats(),
                }
                if acc.is_main_process:
                    with log_path.open("a", encoding="utf-8") as fh:
                        fh.write(json.dumps(record) + "\n")
                if self.tc.report_to:
                    acc.log(record, step=done)
                bar.set_postfix(loss=f"{stats['loss']:.3f}")
            bar.update(1)
            if self.tc.save_steps and done % self.tc.save_steps == 0 and done < self.total_steps:
                self._save(done)
            if interrupt is not None and interrupt.requested and done < self.total_steps:
                bar.close()
                self._save(done)  # at a step's end, so the resume is exact
                raise Interrupted(f"interrupted at step {done}; run the same command to resume")
        bar.close()
        if self.probe is not None:
            self.probe.remove()
        if stop < self.total_steps:
            self._save(stop)
            acc.wait_for_everyone()
            return TrainResult(self.output_dir, stop, {"interrupted_at": stop})
        summary = self._finish(time.perf_counter() - t0, step_times, start)
        if self.tc.report_to:
            acc.end_training()
        return TrainResult(self.output_dir, self.total_steps, summary)

    def step(self, step: int) -> dict[str, float]:
        """One BDS step (see the module docstring). Returns losses for the log."""
        acc, tc = self.accelerator, self.tc
        rank, world = acc.process_index, acc.num_processes
        u_idx = self.user_sampler.rank_batch(step, rank, world)
        user = [self.user[i] for i in u_idx]
        align = (
            [self.align[i] for i in self.align_sampler.rank_batch(step, rank, world)]
            if tc.uses_alignment
            else []
        )
        index = torch.tensor(u_idx)
        weights = (
            self.scheduler.weights(index).to(acc.device) if self.scheduler is not None else None
        )
        self._last_weights = weights

        with acc.accumulate(self.model):
            if self.probe is not None:
                self.probe.start()
            user_losses, align_losses = self._losses(user, align)
            loss = weighted_objective(user_losses, weights, align_losses)
            acc.backward(loss)
            rates = self._conflict_rates(len(user), weights) if self.probe is not None else None
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad()

        stats = {"loss": float(loss.detach()), "loss_user": float(user_losses.detach().mean())}
        for source in ("benign", "harmful"):  # diagnostics when the data carries labels
            picked = [i for i, s in enumerate(user) if s.source == source]
            if picked:
                stats[f"loss_{source}"] = float(user_losses.detach()[picked].mean())
        if align_losses is not None:
            stats["loss_align"] = float(align_losses.detach().mean())
        if self.scheduler is not None:
            all_index = acc.gather(index.to(acc.device)).cpu()
            all_drive = self._drive(step, user, weights, user_losses, rates, all_index, stats)
            stats["energy"] = self.scheduler.update(
                all_index, all_drive, record_average=step >= self.average_from
            )
            all_weights = acc.gather(weights).cpu()  # every rank's batch, as the update sees
            for i, w in zip(all_index.tolist(), all_weights.tolist(), strict=True):
                source = self.user[i].source
                self.applied_weight[source] = self.applied_weight.get(source, 0.0) + w
        return stats

    def _drive(self, step, user, weights, user_losses, rates, all_index, stats) -> torch.Tensor:
        """What the scheduler weighs the gathered batch by (train.drive), on every rank."""
        acc, tc = self.accelerator, self.tc
        if self.conflict is not None:
            all_rates = acc.gather(rates.to(acc.device)).cpu()
            drive = self.conflict.accumulate(all_index, all_rates, step)
            stats["conflict_rate_mean"] = float(all_rates.mean())
            return drive
        drive = user_losses.detach()
        if tc.scheduler_losses == "updated":  # losses at the parameters after this step
            with torch.no_grad():
                drive, _ = self._losses(user, [])
        if tc.safety_agnostic:
            ref_losses = self._reference_step(user, weights)
            stats["loss_reference"] = float(ref_losses.mean())
            drive = drive - ref_losses
        return acc.gather(drive.float()).cpu()

    def _conflict_horizon(self) -> int:
        """Steps the conflict drive averages the alignment direction over (train.conflict_window)."""
        if self.tc.conflict_window == "step":
            return 1
        return math.ceil(len(self.user) / self.tc.batch_size)

    def _conflict_rates(self, n_user: int, weights: torch.Tensor) -> torch.Tensor:
        """Each user row's first-order loss change from this step's alignment update."""
        acc = self.accelerator
        # d objective / d l_i: w_i / B, scaled as accelerate scaled the loss it back-propagated
        factor = weights.float() / n_user / acc.gradient_accumulation_steps
        if acc.scaler is not None:
            factor = factor * float(acc.scaler.get_scale())
        return self.probe.rates(
            n_user,
            factor,
            self.optimizer,
            self.lr_scheduler.get_last_lr()[0],
            reduce=(lambda t: acc.reduce(t, reduction="mean")) if acc.num_processes > 1 else None,
        )

    def _losses(self, user: list[TokenizedSample], align: list[TokenizedSample]):
        """Per-sample losses of both batches: one forward over both when `one_pass`."""
        pad = self.tokenizer.pad_token_id
        device = self.accelerator.device
        if self.tc.one_pass or not align:
            batch = {k: v.to(device) for k, v in collate(user + align, pad).items()}
            losses = self._sample_losses(self.model, batch)
            return losses[: len(user)], (losses[len(user) :] if align else None)
        parts = []
        for group in (user, align):
            batch = {k: v.to(device) for k, v in collate(group, pad).items()}
            parts.append(self._sample_losses(self.model, batch))
        return parts[0], parts[1]

    def _sample_losses(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-sample response losses [batch], projecting to the vocabulary only where the
        loss reads (response positions) when the model allows it (see _head_is_plain)."""
        if self.plain_head is None:
            self.plain_head = self._head_is_plain(model, batch)
        inputs = _model_inputs(batch)
        with self.accelerator.autocast():
            if self.plain_head:
                out = model(**inputs, output_hidden_states=True, logits_to_keep=1)
                return response_losses(out.hidden_states[-1], batch["labels"], self.lm_head)
            keep = positions_to_keep(batch["labels"])
            return per_sample_loss(model(**inputs, logits_to_keep=keep).logits, batch["labels"])

    def _head_is_plain(self, model: Any, batch: dict[str, torch.Tensor]) -> bool:
        """Whether logits = lm_head(last hidden state) for this model, checked on one batch.

        True for Llama-style models; false where the model rescales or soft-caps its logits
        (Gemma 2, Cohere, Granite...) or does not return hidden states, and then every
        position is projected as usual (slower, same losses).
        """
        if self.lm_head is None:
            return False
        inputs = _model_inputs(batch)
        was_training = model.training
        model.eval()  # no dropout: both ways must see the same network
        try:
            with torch.no_grad(), self.accelerator.autocast():
                out = model(**inputs, output_hidden_states=True)
                full = per_sample_loss(out.logits, batch["labels"])
                fast = response_losses(out.hidden_states[-1], batch["labels"], self.lm_head)
        except (TypeError, ValueError, AttributeError, IndexError):
            return False
        finally:
            model.train(was_training)
        return bool(torch.allclose(full, fast, rtol=1e-3, atol=1e-3))

    def _reference_step(self, user: list[TokenizedSample], weights: torch.Tensor) -> torch.Tensor:
        """Fit theta_ref (a second adapter) to the weighted user batch without D_safe.

        It runs on the unwrapped model, outside DDP, so its gradients are averaged across
        ranks here; the main adapter is untouched. Returns detached l_i(theta_ref).
        """
        batch = {
            k: v.to(self.accelerator.device)
            for k, v in collate(user, self.tokenizer.pad_token_id).items()
        }
        self._activate(REFERENCE_ADAPTER)
        try:
            losses = self._sample_losses(self.peft_model, batch)
            if self.tc.reference_weights == "uniform":
                losses.mean().backward()
            else:
                (losses * weights).mean().backward()
            if self.accelerator.num_processes > 1:
                for group in self.ref_optimizer.param_groups:
                    for p in group["params"]:
                        if p.grad is not None:
                            p.grad = self.accelerator.reduce(p.grad, reduction="mean")
            for group in self.ref_optimizer.param_groups:  # theta's schedule, step for step
                group["lr"] = self.lr_scheduler.get_last_lr()[0]
            self.ref_optimizer.step()
            self.ref_optimizer.zero_grad(set_to_none=True)
        finally:
            self._activate("default")
        return losses.detach()

    def _weight_stats(self) -> dict[str, float]:
        if self.scheduler is None:
            return {}
        w = self.scheduler.all_weights()
        out = {}
        for source in ("benign", "harmful"):
            idx = [i for i, s in enumerate(self.user) if s.source == source]
            if idx:
                out[f"weight_{source}"] = float(w[idx].mean())
        return out

    # ---------------------------------------------------------------- state -------------

    def _state(self) -> dict[str, Any]:
        state = {
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "trajectory_steps": torch.tensor(sorted(self.trajectory), dtype=torch.long),
            "trajectory": torch.tensor([self.trajectory[s] for s in sorted(self.trajectory)]),
        }
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        if self.ref_optimizer is not None:
            state["ref_optimizer"] = self.ref_optimizer.state_dict()
        if self.conflict is not None:
            state["conflict"] = self.conflict.state_dict()
            state["conflict_direction"] = self.probe.state_dict()
        sources = sorted(self.applied_weight)
        state["applied_sources"] = "\n".join(sources)
        state["applied_weight"] = torch.tensor([self.applied_weight[k] for k in sources])
        return state

    def _save(self, step: int) -> None:
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            ckpt.save_checkpoint(
                self.output_dir, step, self.peft_model, self._state(), {"mode": self.tc.mode}
            )
        self.accelerator.wait_for_everyone()

    def _resume(self) -> int:
        """Load the latest checkpoint of this output folder; returns the step to start at."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = ckpt.latest_checkpoint(self.output_dir)
        if path is None:
            (self.output_dir / "train_log.jsonl").unlink(missing_ok=True)
            return 0
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        state, meta = ckpt.load_checkpoint(path)
        step = int(meta["step"])
        adapters = ["default"] + ([REFERENCE_ADAPTER] if self.tc.safety_agnostic else [])
        for name in adapters:
            weights = load_file(ckpt.adapter_weights_file(path, name))
            set_peft_model_state_dict(self.peft_model, weights, adapter_name=name)
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.ref_optimizer is not None:
            self.ref_optimizer.load_state_dict(state["ref_optimizer"])
        if self.conflict is not None:
            self.conflict.load_state_dict(state["conflict"])
            self.probe.load_state_dict(state["conflict_direction"])
        if state.get("applied_sources"):
            names = state["applied_sources"].split("\n")
            self.applied_weight = dict(zip(names, state["applied_weight"].tolist(), strict=True))
        steps = state["trajectory_steps"].tolist()
        self.trajectory = {
            s: row for s, row in zip(steps, state["trajectory"].tolist(), strict=True)
        }
        self._truncate_log(step)
        return step

    def _truncate_log(self, step: int) -> None:
        """Drop log lines an interrupted run wrote after its last checkpoint."""
        path = self.output_dir / "train_log.jsonl"
        if not path.is_file() or not self.accelerator.is_main_process:
            return
        keep = [
            line
            for line in path.read_text().splitlines()
            if line and json.loads(line)["step"] <= step
        ]
        path.write_text("".join(line + "\n" for line in keep))

    # ---------------------------------------------------------------- outputs -----------

    def _finish(self, seconds: float, step_times: list[float], start: int) -> dict[str, Any]:
        acc = self.accelerator
        acc.wait_for_everyone()
        summary: dict[str, Any] = {}
        if acc.is_main_process:
            out = self.output_dir
            if self.scheduler is not None:  # no output of a run whose weights went NaN
                check_finite(self.total_steps, {}, self.scheduler.reported_weights(), out)
            with atomic_directory(out / "adapter") as tmp:  # whole or absent
                # the vocabulary is never resized here: no need for PEFT to look the base
                # model's config up by its (shareable, not local) name to decide
                self.peft_model.save_pretrained(
                    tmp,
                    selected_adapters=["default"],
                    safe_serialization=True,
                    save_embedding_layers=False,
                )
            ids = [s.id for s in self.user]
            sources = [s.source for s in self.user]
            if self.scheduler is not None:
                weights = self.scheduler.reported_weights().tolist()
                write_weights_table(
                    out / "weights.csv",
                    ids,
                    sources,
                    weights,
                    self.scheduler.all_logits().tolist(),
                    self.trajectory,
                )
                if self.tc.scheduler.kind == "neural":  # a reusable, self-contained folder
                    self.scheduler.save(out / "scheduler")
                summary["weights"] = weight_summary(sources, weights)
                summary["weights"]["training_weight_share"] = _shares(self.applied_weight)
                summary["drive"] = self.tc.drive
            summary.update(
                {
                    "mode": self.tc.mode,
                    "steps": self.total_steps,
                    "resumed_from_step": start,
                    "processes": acc.num_processes,
                    "wall_seconds": round(seconds, 2),
                    "mixed_precision": {
                        "setting": self.tc.mixed_precision,
                        "used": self.precision,
                        "reason": self.precision_reason,
                    },
                    "vocab_projection": "response positions" if self.plain_head else "all",
                    "mean_step_seconds": round(
                        sum(step_times[1:]) / max(len(step_times) - 1, 1), 4
                    ),
                    "counts": {
                        "finetune": len(self.data.finetune),
                        "finetune_harmful": self.data.mix.n_harmful,
                        "finetune_benign": self.data.mix.n_benign,
                        "alignment": len(self.data.alignment),
                        "truncation_finetune": self.user_report.to_dict(),
                        "truncation_alignment": self.align_report.to_dict()
                        if self.align_report
                        else None,
                        "source_notes": self.data.notes(),
                    },
                    "config": self.cfg,
                    "versions": package_versions(),
                }
            )
            write_json(out / "summary.json", summary)
        acc.wait_for_everyone()
        return summary
