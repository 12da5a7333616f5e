"""Data schedulers: per-sample safety weights for the user's data, and their update."""
