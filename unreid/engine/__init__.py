"""Training engine: the epoch loop, checkpoints, evaluation helpers."""

from unreid.engine.trainer import (
    Hook,
    Trainer,
    TrainingStopped,
    evaluate_model,
    extract,
    load_model_from_checkpoint,
)

__all__ = ["Hook", "Trainer", "TrainingStopped", "evaluate_model", "extract", "load_model_from_checkpoint"]
