"""Training: the one generic loop, seeding, checkpoints, evaluation helpers, distributed set-up and progress."""

from .calibration import ReliabilityDiagram, expected_calibration_error, reliability_diagram
from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import init_from_env, is_main_process, shutdown
from .evaluation import accuracy, predict_logits
from .loop import FitResult, StepFn, TensorBatches, default_device, fit, rank_and_world, seed_all
from .probe import knn_accuracy, linear_probe_accuracy
from .progress import CellProgress

__all__ = [
    "CellProgress",
    "FitResult",
    "ReliabilityDiagram",
    "StepFn",
    "TensorBatches",
    "accuracy",
    "default_device",
    "expected_calibration_error",
    "fit",
    "init_from_env",
    "is_main_process",
    "knn_accuracy",
    "linear_probe_accuracy",
    "load_checkpoint",
    "predict_logits",
    "rank_and_world",
    "reliability_diagram",
    "save_checkpoint",
    "seed_all",
    "shutdown",
]
