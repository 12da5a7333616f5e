"""bds: defended fine-tuning of LLMs with the Bayesian Data Scheduler."""

__version__ = "0.1.0"
