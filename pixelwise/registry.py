"""The one model registry: ``register_model`` / ``list_models`` / ``create_model``.

Builders are keyword-only functions ``builder(*, num_classes, in_channels, **arch_kwargs) -> nn.Module``.
``create_model`` drops arguments whose value is ``None`` so that unset CLI/config values never override
a model's own defaults.

Arguments often come from files (a checkpoint's metadata, a recipe's ``model.params``), so nothing is
built before they are checked. Each architecture declares, next to its builder, the range of every
argument that sets a size or a count: ``@register_model("unet", limits={"depth": (1, 8), ...})``
(integer bounds: integers only; a sequence argument: each item, at most :data:`MAX_ITEMS` of them).
``num_classes`` and ``in_channels`` have the same limits for every architecture. Then
:func:`model_skeleton` builds the model on PyTorch's ``meta`` device (shapes only, nothing allocated)
and refuses one of more than ``max_parameters`` parameters (default :data:`MAX_PARAMETERS`).
:func:`create_model` does all of it before it builds the model for real.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import PixelwiseError, first_line

__all__ = [
    "MAX_CLASSES",
    "MAX_IN_CHANNELS",
    "MAX_ITEMS",
    "MAX_PARAMETERS",
    "check_model_args",
    "create_model",
    "list_models",
    "model_builder",
    "model_limits",
    "model_skeleton",
    "register_model",
]

Limit = tuple[float, float]  # inclusive (low, high); integer bounds admit integers only

MAX_CLASSES = 255  # class indices are stored as uint8; 255 is the ignore label
MAX_IN_CHANNELS = 16
MAX_ITEMS = 16  # items of a sequence argument (rates, bins, decoder_channels, ...)
# 2 GB of float32 weights (training holds about four times that with AdamW); nearly four times
# the largest registered model with its default encoder (fcn8s on VGG-16: 134 M)
MAX_PARAMETERS = 500_000_000
_GENERIC: dict[str, Limit] = {"num_classes": (1, MAX_CLASSES), "in_channels": (1, MAX_IN_CHANNELS)}


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., nn.Module]
    limits: dict[str, Limit] = field(default_factory=dict)
    max_parameters: int = MAX_PARAMETERS


_REGISTRY: dict[str, _Entry] = {}


def register_model(
    name: str,
    *,
    limits: Mapping[str, Limit] | None = None,
    max_parameters: int = MAX_PARAMETERS,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model builder under ``name``; a duplicate name is an error.

    Args:
        name: the architecture's name.
        limits: ``{argument: (low, high)}``, inclusive, for every argument that sets a size or a
            count (widths, depths, numbers of layers, strides, rates); integer bounds admit
            integers only; for a sequence argument, each item.
        max_parameters: the largest model (in parameters) the builder may be asked for.
    """

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise RuntimeError(f"model name {name!r} is already registered")
        stray = sorted(set(limits or {}) - set(inspect.signature(fn).parameters))
        if stray:
            raise RuntimeError(f"model {name!r}: limits for arguments it does not take: {stray}")
        _REGISTRY[name] = _Entry(fn, dict(limits or {}), max_parameters)
        return fn

    return wrap


def _ensure_loaded() -> None:
    from . import models  # noqa: F401  (importing registers the builders)


def list_models() -> list[str]:
    """Names of all registered architectures, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def _entry(name: str) -> _Entry:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise PixelwiseError(
            f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}"
        ) from None


def model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered under ``name``."""
    return _entry(name).builder


def model_limits(name: str) -> dict[str, Limit]:
    """The declared ``(low, high)`` of each limited argument of ``name``, the generic ones included."""
    return {**_GENERIC, **_entry(name).limits}


def _out_of_range(name: str, key: str, value: Any, limit: Limit) -> PixelwiseError | None:
    low, high = limit
    integral = isinstance(low, int) and isinstance(high, int)
    sequence = isinstance(value, (list, tuple))
    items = list(value) if sequence else [value]
    if len(items) > MAX_ITEMS:
        return PixelwiseError(f"model {name!r}: {key} has {len(items)} items, at most {MAX_ITEMS}")
    for v in items:
        kind_ok = isinstance(v, int) if integral else isinstance(v, (int, float))
        if isinstance(v, bool) or not kind_ok or not low <= v <= high:
            which = "each item must be" if sequence else "must be"
            what = "an integer" if integral else "a number"
            return PixelwiseError(
                f"model {name!r}: {key}={value!r}: {which} {what} from {low} to {high}"
            )
    return None


def check_model_args(
    name: str, kwargs: Mapping[str, Any], *, complete: bool = True
) -> dict[str, Any]:
    """Check architecture ``name``'s arguments without building anything: a registered name,
    arguments its builder takes, none missing, each limited one within its declared range.

    Args:
        name: the architecture.
        kwargs: its arguments.
        complete: whether ``kwargs`` must hold every required argument; ``False`` checks a recipe's
            ``model.params``, whose ``num_classes`` and ``in_channels`` come from the dataset.

    Returns:
        The arguments with ``None`` values dropped.

    Raises:
        PixelwiseError: one line naming the model, the argument and the reason.
    """
    entry = _entry(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    params = inspect.signature(entry.builder).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = [k for k in kwargs if k not in params]
        if unknown:
            allowed = [k for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
            raise PixelwiseError(
                f"model {name!r} has no argument(s) {', '.join(unknown)}; "
                f"it takes: {', '.join(allowed)}"
            )
    missing = [
        k
        for k, p in params.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is p.empty and k not in kwargs
    ]
    if missing and complete:
        raise PixelwiseError(f"model {name!r} needs {', '.join(missing)}")
    limits = {**_GENERIC, **entry.limits}
    for key, value in kwargs.items():
        if key in limits:
            problem = _out_of_range(name, key, value, limits[key])
        elif isinstance(value, (list, tuple)) and len(value) > MAX_ITEMS:
            problem = PixelwiseError(
                f"model {name!r}: {key} has {len(value)} items, at most {MAX_ITEMS}"
            )
        else:
            continue
        if problem is not None:
            raise problem
    return kwargs


def _shown(kwargs: Mapping[str, Any]) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return text if len(text) <= 160 else text[:157] + "..."


def model_skeleton(name: str, **kwargs: Any) -> nn.Module:
    """Check the arguments (:func:`check_model_args`), then build the model on the ``meta`` device:
    its parameters have shapes but no memory, so a state dict can be compared with it before
    anything is allocated. ``encoder_weights`` is left out (weights do not change shapes).

    Raises:
        PixelwiseError: bad arguments, a builder that refuses them, or a model of more parameters
            than its architecture's ``max_parameters``.
    """
    entry = _entry(name)
    kwargs = check_model_args(name, kwargs)
    kwargs.pop("encoder_weights", None)
    try:
        with torch.device("meta"):
            model = entry.builder(**kwargs)
    except PixelwiseError as exc:
        raise PixelwiseError(f"model {name!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a builder may fail in many ways on odd arguments
        raise PixelwiseError(
            f"model {name!r} cannot be built with {_shown(kwargs)} "
            f"({type(exc).__name__}: {first_line(exc)[:200]})"
        ) from None
    n = sum(p.numel() for p in model.parameters())
    if n > entry.max_parameters:
        raise PixelwiseError(
            f"model {name!r} with {_shown(kwargs)} would have {n:,} parameters "
            f"({4 * n / 2**30:,.1f} GiB as float32), more than the {entry.max_parameters:,} "
            "it may have"
        )
    return model


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model, after checking its arguments and size (:func:`model_skeleton`).

    Args:
        name: registered architecture name (see :func:`list_models`).
        **kwargs: ``num_classes``, ``in_channels`` and architecture arguments; ``None`` values are dropped.

    Returns:
        The model; ``model(x)`` maps N×in_channels×H×W to N×num_classes×H×W logits.
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    model_skeleton(name, **kwargs)
    return _entry(name).builder(**kwargs)
