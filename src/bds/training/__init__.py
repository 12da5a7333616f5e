"""Defended fine-tuning: the trainer (a loop over a defense's hooks) and the outputs of a run."""
