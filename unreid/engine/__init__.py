"""The shared engine: the epoch loop, checkpoints, resume."""

from unreid.engine.trainer import Hook, Trainer, TrainingStopped, load_model_from_checkpoint

__all__ = ["Hook", "Trainer", "TrainingStopped", "load_model_from_checkpoint"]
