"""The one model registry: ``register_model`` / ``list_models`` / ``create_model``.

Builders are keyword-only functions ``builder(*, num_classes, in_channels, **arch_kwargs) -> nn.Module``.
``create_model`` drops arguments whose value is ``None`` so that unset CLI/config values never override
a model's own defaults.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from .errors import PixelwiseError

__all__ = ["register_model", "list_models", "create_model", "model_builder"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model builder under ``name``; a duplicate name is an error."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise RuntimeError(f"model name {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return wrap


def _ensure_loaded() -> None:
    from . import models  # noqa: F401  (importing registers the builders)


def list_models() -> list[str]:
    """Names of all registered architectures, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered under ``name``."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise PixelwiseError(
            f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}"
        ) from None


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: registered architecture name (see :func:`list_models`).
        **kwargs: ``num_classes``, ``in_channels`` and architecture arguments; ``None`` values are dropped.

    Returns:
        The model; ``model(x)`` maps N×in_channels×H×W to N×num_classes×H×W logits.
    """
    builder = model_builder(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    params = inspect.signature(builder).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in kwargs if k not in params] if not accepts_any else []
    if unknown:
        allowed = [k for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
        raise PixelwiseError(
            f"model {name!r} has no argument(s) {', '.join(unknown)}; it takes: {', '.join(allowed)}"
        )
    return builder(**kwargs)
