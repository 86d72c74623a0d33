"""Training: the one generic loop, seeding, checkpoints, evaluation helpers and distributed set-up."""

from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import init_from_env, is_main_process, shutdown
from .evaluation import accuracy, predict_logits
from .probe import knn_accuracy, linear_probe_accuracy
from .loop import FitResult, StepFn, TensorBatches, default_device, fit, rank_and_world, seed_all
from .calibration import ReliabilityDiagram, expected_calibration_error, reliability_diagram

__all__ = [
    "FitResult",
    "StepFn",
    "TensorBatches",
    "accuracy",
    "default_device",
    "fit",
    "init_from_env",
    "knn_accuracy",
    "linear_probe_accuracy",
    "is_main_process",
    "load_checkpoint",
    "predict_logits",
    "rank_and_world",
    "save_checkpoint",
    "seed_all",
    "shutdown",
    "ReliabilityDiagram",
    "expected_calibration_error",
    "reliability_diagram",
]
