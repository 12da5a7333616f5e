"""The Python API: `BDSConfig` and `BDSTrainer` (see bds/api/trainer.py)."""

from bds.api.config import BDSConfig
from bds.api.trainer import BDSTrainer, BDSTrainResult

__all__ = ["BDSConfig", "BDSTrainResult", "BDSTrainer"]
