"""Evaluation: batched generation, pluggable judges, harmful score, fine-tune accuracy, over-refusal.

Kept free of heavy imports: `bds.config` imports `bds.eval.config` at start-up.
"""
