"""The hooks a defense gives the trainer, and the plain step they default to.

The trainer (bds/training/trainer.py) owns the model, optimizer, accelerate, checkpoints
and outputs; it asks the defense, in this order:

  set-up   prepare_data (filter or add records) -> before_model (state that must draw the
           RNG before the LoRA init) -> extend_model (extra adapters, before the optimizer
           collects the trainable weights) -> after_model (hooks, extra optimizers);
  a step   batch (which samples) -> objective (the loss to back-propagate, stats) ->
           after_backward (read gradients) -> [optimizer step] -> after_step (update the
           defense's own state) -> on_step_end (after the finite-value guard);
  state    state_dict / load_state_dict (tensors, numbers, strings: exact resume);
  outputs  after_training (post-fine-tuning repair of the trained adapter, before it is
           saved), finish (its files and summary entries), summary (what it changed).

The defaults are supervised fine-tuning on the user batch (+ the alignment batch when the
settings need one); a defense overrides only where its algorithm differs. Hooks import
torch inside, so a defense module (and its settings) loads without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class StepBatch:
    """The samples one step trains on (this rank's share) and their scheduler weights."""

    user: list[Any]
    index: Any  # tensor of the user samples' positions in D_ft
    align: list[Any]
    weights: Any = None  # tensor [len(user)] or None (unweighted)


class Defense:
    """Base hooks: SFT on the user batch, plus CE on the alignment batch if one is drawn."""

    # adapters a checkpoint holds and a resume loads ("default" is the one delivered)
    adapters: tuple[str, ...] = ("default",)

    def __init__(self, settings: Any, run: Any):
        self.settings = settings
        self.run = run
        # factor on the alignment batch's mean CE in the objective (Mix's and BDS's lambda)
        self.alignment_weight: float = getattr(settings, "alignment_weight", 1.0)

    # ---------------------------------------------------------------- set-up ------------

    def prepare_data(self, data: Any) -> Any:
        """The PreparedData the run trains on (data filters and augmenters change it)."""
        return data

    def before_model(self) -> None:
        """Build state that draws the global RNG before the LoRA init does."""

    def extend_model(self, peft_model: Any, lora_config: Any) -> None:
        """Add adapters before the optimizer collects the trainable weights."""

    def after_model(self) -> None:
        """Attach hooks or optimizers once the model is prepared."""

    # ---------------------------------------------------------------- a step ------------

    def batch(self, step: int) -> StepBatch:
        """This rank's user batch, and its alignment batch when the settings draw one."""
        import torch

        run = self.run
        index = run.user_indices(step)
        align = run.align_batch(step) if self.settings.alignment_batch else []
        return StepBatch([run.user[i] for i in index], torch.tensor(index), align)

    def objective(self, step: int, batch: StepBatch) -> tuple[Any, dict[str, float]]:
        """(loss to back-propagate, stats for the log)."""
        from bds.training.losses import weighted_objective

        user_losses, align_losses = self.run.losses(batch.user, batch.align)
        loss = weighted_objective(user_losses, batch.weights, align_losses, self.alignment_weight)
        return loss, self.loss_stats(loss, batch, user_losses, align_losses)

    def loss_stats(self, loss: Any, batch: StepBatch, user_losses: Any, align_losses: Any):
        """The log's loss entries; per-source means where the data carries labels."""
        stats = {"loss": float(loss.detach())}
        if user_losses is not None:
            losses = user_losses.detach()
            stats["loss_user"] = float(losses.mean())
            for source in ("benign", "harmful"):
                picked = [i for i, s in enumerate(batch.user) if s.source == source]
                if picked:
                    stats[f"loss_{source}"] = float(losses[picked].mean())
        if align_losses is not None:
            stats["loss_align"] = float(align_losses.detach().mean())
        return stats

    def after_backward(self, step: int, batch: StepBatch) -> None:
        """Read the step's gradients before the optimizer applies them."""

    def after_step(self, step: int, batch: StepBatch, stats: dict[str, float]) -> None:
        """Update the defense's own state after the model's step; may add to `stats`."""

    def on_step_end(self, done: int) -> None:
        """After the finite-value guard passed step `done` (1-based)."""

    def log_stats(self) -> dict[str, float]:
        """Extra entries for the log lines."""
        return {}

    def values_to_check(self) -> Any:
        """Tensors besides the losses that must stay finite (the batch's weights)."""
        return None

    # ---------------------------------------------------------------- state -------------

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    # ---------------------------------------------------------------- outputs -----------

    def after_training(self, peft_model: Any) -> None:
        """Repair the trained adapter ("default") in place after the last step, before it
        is saved (main process only; a post-fine-tuning defense's whole work)."""

    def finish(self, output_dir: Path, summary: dict[str, Any]) -> None:
        """Write the defense's own files (main process) and add to the run's summary."""

    def summary(self) -> dict[str, Any]:
        """What the defense did to the data or the model, for summary.json's `defense`."""
        return {}

    def close(self) -> None:
        """Remove hooks at the end of the loop."""
