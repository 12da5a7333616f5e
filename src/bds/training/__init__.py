"""Defended fine-tuning: the BDS step, its modes, and the outputs of a run."""
