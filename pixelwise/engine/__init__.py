"""Training, evaluation and prediction: the paths between files and models."""

from .checkpoint import ModelMeta, build_model, load_checkpoint, save_checkpoint
from .evaluate import EvalResult, evaluate, report_dict, write_report
from .predict import PredictSummary, predict_files
from .predictor import Segmenter, load
from .train import TrainResult, train

__all__ = [
    "EvalResult",
    "ModelMeta",
    "PredictSummary",
    "Segmenter",
    "TrainResult",
    "build_model",
    "evaluate",
    "load",
    "load_checkpoint",
    "predict_files",
    "report_dict",
    "save_checkpoint",
    "train",
    "write_report",
]
