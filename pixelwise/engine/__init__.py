"""Training, evaluation and prediction: the paths between files and models."""

from .bundle import bundle_info, read_bundle, write_bundle
from .checkpoint import ModelMeta, build_model, load_checkpoint, save_checkpoint
from .evaluate import EvalResult, evaluate, report_dict, write_report
from .inference import InferenceConfig
from .loading import LoadedModel, load_model
from .predict import PredictSummary, predict_files
from .predictor import Segmenter, load
from .train import TrainResult, train

__all__ = [
    "EvalResult",
    "InferenceConfig",
    "LoadedModel",
    "ModelMeta",
    "PredictSummary",
    "Segmenter",
    "TrainResult",
    "build_model",
    "bundle_info",
    "evaluate",
    "load",
    "load_checkpoint",
    "load_model",
    "predict_files",
    "read_bundle",
    "report_dict",
    "save_checkpoint",
    "train",
    "write_bundle",
    "write_report",
]
