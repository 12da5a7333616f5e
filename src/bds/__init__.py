"""bds: defended fine-tuning of LLMs with the Bayesian Data Scheduler.

`from bds import BDSConfig, BDSTrainer` (bds/api/); imported on first use, so
`import bds` stays light.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["BDSConfig", "BDSTrainResult", "BDSTrainer", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("BDSConfig", "BDSTrainer", "BDSTrainResult"):
        import bds.api

        return getattr(bds.api, name)
    raise AttributeError(f"module 'bds' has no attribute {name!r}")
