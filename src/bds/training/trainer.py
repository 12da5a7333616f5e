"""Defended fine-tuning on accelerate: a loop over the configured defense's hooks.

One step, whatever the defense (`defense:`, see bds/defenses/):
  1. the defense picks the batch (user samples, an alignment batch, their weights) -
     deterministic in the step;
  2. the model is updated on the defense's objective (SFT: mean CE of the user batch;
     BDS: mean CE(alignment) + mean_i(w_i * l_i(user)); ...);
  3. the defense updates its own state (BDS: the scheduler, on losses gathered from all
     ranks so every rank holds the same weights).

accelerate provides devices, DDP, mixed precision, gradient accumulation and trackers;
PEFT the LoRA adapter(s); checkpointing is in checkpoint.py (see why there).
"""

from __future__ import annotations

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
from bds.defenses.registry import build_defense
from bds.errors import BDSInputError, Interrupted
from bds.io import atomic_directory, write_json
from bds.training import checkpoint as ckpt
from bds.training.batching import StepSampler, collate
from bds.training.config import TrainConfig
from bds.training.distributed import fit_deepspeed_batch, refuse_sharded_parameters
from bds.training.guard import InterruptAtStepEnd, check_finite
from bds.training.losses import per_sample_loss, positions_to_keep, response_losses
from bds.training.outputs import package_versions


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    summary: dict[str, Any]
    model: Any = None  # the trained PeftModel, when training finished in this call


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
    # rank 0 holds the folder's lock for all ranks (bds/lock.py)
    with InterruptAtStepEnd() as interrupt, folder_lock(output_dir, note=_note):
        return _Run(cfg, output_dir, model, tokenizer, data, progress).run(until_step, interrupt)


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


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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
        self.given_data = data if data is not None else prepare_data(cfg.data)
        self.defense = build_defense(cfg.defense, self)
        self.data = self.defense.prepare_data(self.given_data)
        self._tokenize()
        n_user = len(self.user)
        self.total_steps = self.tc.max_steps or math.ceil(
            self.tc.epochs * n_user / self.tc.batch_size
        )
        self.user_sampler = StepSampler(n_user, self.tc.batch_size, self.tc.seed)
        self.align_sampler = StepSampler(
            max(len(self.align), 1), self.tc.alignment_batch_size, self.tc.seed + 1
        )
        self.plain_head: bool | None = None  # decided on the first batch (_head_is_plain)
        self.defense.before_model()

        if self.accelerator.is_main_process:  # a folder of another run is refused here
            from bds.run_identity import run_identity, start_run

            identity = run_identity(cfg, self.given_data, model, tokenizer)
            start_run(output_dir, identity, note=_note)
        self._build_model(model)
        self.defense.after_model()
        _check_room(self.output_dir, self.peft_model)

    # ---------------------------------------------------------------- set-up ------------

    def _tokenize(self) -> None:
        """Tokenize D_ft (and D_safe when the defense reads it); drops are never silent."""
        d, name = self.cfg.data, self.cfg.defense.name
        self.user, self.user_report = tokenize_records(
            self.data.finetune, self.tokenizer, d.template, d.max_length, d.truncation
        )
        self.align: list[TokenizedSample] = []
        self.align_report: TruncationReport | None = None
        needs_alignment = "alignment" in self.cfg.defense.needs
        if needs_alignment:
            if not self.data.alignment:
                raise BDSInputError(f"defense {name} needs an alignment set: set data.alignment")
            self.align, self.align_report = tokenize_records(
                self.data.alignment, self.tokenizer, d.template, d.max_length, d.truncation
            )
        if self.progress:
            self.accelerator.print(f"D_ft: {self.user_report.summary()}")
            if self.align_report is not None:
                self.accelerator.print(f"D_safe: {self.align_report.summary()}")
        if not self.user or (needs_alignment and not self.align):
            raise BDSInputError(
                f"no sample fits data.max_length={d.max_length}; raise it or check the data"
            )

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
        self.defense.extend_model(peft_model, lora_cfg)
        params = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.tc.lr, weight_decay=self.tc.weight_decay)
        lr_scheduler = get_scheduler(
            self.tc.lr_schedule,
            optimizer,
            num_warmup_steps=self.tc.warmup_steps,
            num_training_steps=self.total_steps,
        )
        refuse_sharded_parameters(self.accelerator)
        fit_deepspeed_batch(self.accelerator, self.tc.batch_size)  # no dataloader to read it from
        self.model, self.optimizer, self.lr_scheduler = self.accelerator.prepare(
            peft_model, optimizer, lr_scheduler
        )
        self.peft_model = self.accelerator.unwrap_model(self.model)
        self.lm_head = self.peft_model.get_output_embeddings()

    def activate(self, adapter: str, peft_model: Any = None) -> None:
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
        acc, defense = self.accelerator, self.defense
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
            desc=f"train ({self.cfg.defense.name})",
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
            check_finite(done, stats, defense.values_to_check(), self.output_dir, bar.close)
            defense.on_step_end(done)
            if done % self.tc.log_steps == 0 or done == self.total_steps:
                lr = self.lr_scheduler.get_last_lr()[0]
                record = {"step": done, "lr": lr, **stats, **defense.log_stats()}
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
        defense.close()
        if stop < self.total_steps:
            self._save(stop)
            acc.wait_for_everyone()
            return TrainResult(self.output_dir, stop, {"interrupted_at": stop})
        summary = self._finish(time.perf_counter() - t0, step_times, start)
        if self.tc.report_to:
            acc.end_training()
        self.peft_model.set_adapter("default")  # the adapter saved in adapter/
        return TrainResult(self.output_dir, self.total_steps, summary, self.peft_model)

    def step(self, step: int) -> dict[str, float]:
        """One step (see the module docstring). Returns losses for the log."""
        batch = self.defense.batch(step)
        with self.accelerator.accumulate(self.model):
            loss, stats = self.defense.objective(step, batch)
            self.accelerator.backward(loss)
            self.defense.after_backward(step, batch)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad()
        self.defense.after_step(step, batch, stats)
        return stats

    # ---------------------------------------------------------------- for defenses ------

    def user_indices(self, step: int) -> list[int]:
        """This rank's share of the step's user batch (positions in D_ft)."""
        acc = self.accelerator
        return self.user_sampler.rank_batch(step, acc.process_index, acc.num_processes)

    def align_batch(self, step: int) -> list[TokenizedSample]:
        """This rank's share of the step's alignment batch."""
        acc = self.accelerator
        rows = self.align_sampler.rank_batch(step, acc.process_index, acc.num_processes)
        return [self.align[i] for i in rows]

    def device_batch(self, samples: list[TokenizedSample]) -> dict[str, torch.Tensor]:
        pad = self.tokenizer.pad_token_id
        return {k: v.to(self.accelerator.device) for k, v in collate(samples, pad).items()}

    def losses(self, user: list[TokenizedSample], align: list[TokenizedSample]):
        """Per-sample losses of both batches: one forward over both when `one_pass`."""
        if self.tc.one_pass or not align:
            losses = self.sample_losses(self.model, self.device_batch(user + align))
            return losses[: len(user)], (losses[len(user) :] if align else None)
        parts = [self.sample_losses(self.model, self.device_batch(g)) for g in (user, align)]
        return parts[0], parts[1]

    def sample_losses(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-sample response losses [batch], projecting to the vocabulary only where the
        loss reads (response positions) when the model allows it (see _head_is_plain)."""
        if self.plain_head is None:
            self.plain_head = self._head_is_plain(model, batch)
        inputs = model_inputs(batch)
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
        inputs = model_inputs(batch)
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

    # ---------------------------------------------------------------- state -------------

    def _state(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "defense": self.defense.state_dict(),
        }

    def _save(self, step: int) -> None:
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            meta = {"defense": self.cfg.defense.name}
            ckpt.save_checkpoint(self.output_dir, step, self.peft_model, self._state(), meta)
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
        for name in self.defense.adapters:
            weights = load_file(ckpt.adapter_weights_file(path, name))
            set_peft_model_state_dict(self.peft_model, weights, adapter_name=name)
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.defense.load_state_dict(state["defense"])
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
            self.defense.after_training(self.peft_model)  # post-fine-tuning repair, if any
            self.defense.finish(out, summary)  # checks its values first: no output of NaNs
            with atomic_directory(out / "adapter") as tmp:  # whole or absent
                # the vocabulary is never resized here: no need for PEFT to look the base
                # model's config up by its (shareable, not local) name to decide
                self.peft_model.save_pretrained(
                    tmp,
                    selected_adapters=["default"],
                    safe_serialization=True,
                    save_embedding_layers=False,
                )
            summary.update(
                {
                    "mode": self.cfg.defense.name,
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
                    "counts": self._counts(),
                    "config": self.cfg,
                    "versions": package_versions(),
                }
            )
            if self.defense.summary():
                summary["defense"] = self.defense.summary()
            from bds.model_card import write_model_card

            write_model_card(out / "adapter", summary)  # the adapter folder can be shared as is
            write_json(out / "summary.json", summary)
        acc.wait_for_everyone()
        return summary

    def _counts(self) -> dict[str, Any]:
        """The data as given (a defense's changes to it are in summary's `defense`)."""
        given = self.given_data
        return {
            "finetune": len(given.finetune),
            "finetune_harmful": given.mix.n_harmful,
            "finetune_benign": given.mix.n_benign,
            "alignment": len(given.alignment),
            "truncation_finetune": self.user_report.to_dict(),
            "truncation_alignment": self.align_report.to_dict() if self.align_report else None,
            "source_notes": given.notes(),
        }
