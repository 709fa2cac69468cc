"""pixelwise: semantic segmentation — every pixel of an image gets a class label.

Public API::

    import pixelwise as pw
    pw.list_models()                                   # registered architectures
    model = pw.create_model("unet", num_classes=11)    # an nn.Module: N×3×H×W → N×11×H×W logits
    pw.list_encoders()                                 # backbones: create_model(..., encoder=...)
    cfg = pw.load_config("configs/camvid_unet.yaml")
    pw.train(cfg, "runs/camvid_unet")
    seg = pw.load("runs/camvid_unet/best.ckpt")         # a Segmenter
    labels = seg.predict(image)                          # H×W class indices
    result = pw.evaluate(seg, pw.load_dataset_spec("configs/data/camvid.yaml"), "test")
    seg = pw.load("runs/deeplab/best.ckpt", crf=True)   # refine with the dense CRF (pixelwise.crf)
    seg = pw.load("camvid")                              # a model bundled with the package
    pw.list_bundled()                                    # their names
    pw.write_bundle("runs/camvid_unet/best.ckpt", "bundles", "mymodel")  # safetensors + json
    for frame in pw.segment_video(seg, "drive.mp4"):    # frames lazily (pip install 'pixelwise[video]')
        frame.index, frame.labels
    pw.write_segmented_video(seg, "drive.mp4", "out/", masks="png")  # drive_overlay.mp4, drive_masks/
    scene = pw.road_scene(1)                             # a generated street: .image, .labels (CamVid)
    for frame in pw.road_clip(1, frames=36): ...         # a drive along it, frames agree
"""

__version__ = "0.1.0"

import os as _os

# albumentations checks PyPI for a newer version on import; pixelwise never touches the network.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from .config import RunConfig, load_config  # noqa: E402
from .data import DatasetSpec, load_dataset_spec  # noqa: E402
from .data.synthetic import ROAD_SCENE_CLASSES, RoadScene, road_clip, road_scene  # noqa: E402
from .encoders import create_encoder, list_encoders  # noqa: E402
from .engine import (  # noqa: E402
    EvalResult,
    InferenceConfig,
    LoadedModel,
    Segmenter,
    evaluate,
    load,
    load_model,
    predict_files,
    read_bundle,
    report_dict,
    train,
    write_bundle,
    write_report,
)
from .metrics import ConfusionMatrix  # noqa: E402
from .pretrained import list_bundled  # noqa: E402
from .registry import create_model, list_models, register_model  # noqa: E402
from .video import segment_video, write_segmented_video  # noqa: E402

__all__ = [
    "__version__",
    "ConfusionMatrix",
    "DatasetSpec",
    "ROAD_SCENE_CLASSES",
    "RoadScene",
    "EvalResult",
    "InferenceConfig",
    "LoadedModel",
    "RunConfig",
    "Segmenter",
    "create_encoder",
    "create_model",
    "evaluate",
    "list_bundled",
    "list_encoders",
    "list_models",
    "load",
    "load_config",
    "load_dataset_spec",
    "load_model",
    "predict_files",
    "read_bundle",
    "register_model",
    "report_dict",
    "road_clip",
    "road_scene",
    "segment_video",
    "train",
    "write_bundle",
    "write_report",
    "write_segmented_video",
]
