"""Checks that a converted model predicts like its source — a float16 bundle, an ONNX export —
through the one inference path (:meth:`~pixelwise.engine.predictor.Segmenter.logits`) in float32,
whole image, without TTA or CRF, on random normalised inputs. (The precision check on a labelled
split is :func:`pixelwise.engine.evaluate.check_amp`.)"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .. import outputs
from ..errors import PixelwiseError
from .checkpoint import ModelMeta
from .inference import InferenceConfig
from .predictor import Segmenter
from .tiling import TileConfig

__all__ = ["LogitDifference", "compare_logits", "compare_models", "plain_segmenter"]

# The configuration a check runs both models under: the network's own float32 logits.
PLAIN = InferenceConfig(amp="off", crf=False, tiling=TileConfig(mode="whole"), channels_last=False)


@dataclass(frozen=True)
class LogitDifference:
    """One input size's comparison: the largest absolute logit difference, and the fraction of
    pixels whose label agrees."""

    size: tuple[int, int]
    max_abs: float
    agree: float


def plain_segmenter(model: nn.Module, meta: ModelMeta) -> Segmenter:
    """``model`` as the checks run it (:data:`PLAIN`), on the device its parameters are on."""
    params = list(model.parameters()) if isinstance(model, nn.Module) else []
    device = params[0].device if params else torch.device("cpu")
    return Segmenter(model, meta, config=PLAIN, device=device)


@torch.no_grad()
def compare_logits(
    reference: Segmenter,
    other: Segmenter,
    sizes: Sequence[tuple[int, int]],
    *,
    batch: int = 1,
    seed: int = 0,
) -> list[LogitDifference]:
    """Run both segmenters on one random normal batch per size (N = ``batch``), in order."""
    meta = reference.meta
    gen = torch.Generator().manual_seed(seed)
    out = []
    for h, w in sizes:
        x = torch.randn(batch, meta.in_channels, h, w, generator=gen)
        a = reference.logits(x).cpu()
        b = other.logits(x).cpu()
        if a.shape != b.shape:
            raise PixelwiseError(
                f"logits of shape {tuple(b.shape)} where the reference gives {tuple(a.shape)}"
            )
        agree = outputs.labels(a, meta.threshold) == outputs.labels(b, meta.threshold)
        out.append(LogitDifference((h, w), float((a - b).abs().max()), float(agree.float().mean())))
    return out


def compare_models(
    reference: nn.Module,
    other: nn.Module,
    meta: ModelMeta,
    input_size: tuple[int, int],
    *,
    seed: int = 0,
) -> tuple[float, float]:
    """Both models on one random normalised input of ``input_size``: the largest absolute logit
    difference and the fraction of pixels whose label agrees (how much float16 weights change)."""
    (d,) = compare_logits(
        plain_segmenter(reference, meta), plain_segmenter(other, meta), [input_size], seed=seed
    )
    return d.max_abs, d.agree
