"""Fine-tuning: TrainerConfig, Trainer, engines (plain torch / DeepSpeed ZeRO), OFA's losses, checkpoints.

DeepSpeed is imported only inside its engine, so ``import ofa`` stays light.
"""

from __future__ import annotations

from ofa.trainer.config import TaskSpec, TrainerConfig
from ofa.trainer.trainer import Trainer, TrainingError

__all__ = ["TrainerConfig", "TaskSpec", "Trainer", "TrainingError"]
