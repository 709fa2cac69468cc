"""The plumbing every loss module shares: class weights (a non-persistent buffer), ``ignore_index``,
and a ``forward`` that calls the module's pure function with every argument the module was built with."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = ["WeightedLoss"]


class WeightedLoss(nn.Module):
    """Base of the loss modules: holds ``weight`` (per class, or ``None``) and ``ignore_index``.

    A subclass names its pure function in ``function`` and stores each of its other keyword-only
    ``__init__`` arguments as an attribute of the same name; :meth:`forward` passes them all to
    ``function`` by name, together with ``weight`` and ``ignore_index``.
    """

    function: ClassVar[Callable[..., torch.Tensor]]
    _options: ClassVar[tuple[str, ...]] = ()
    weight: torch.Tensor | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        params = inspect.signature(cls.__init__).parameters.values()
        shared = ("weight", "ignore_index")
        cls._options = tuple(
            p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in shared
        )

    def __init__(
        self, *, weight: Sequence[float] | torch.Tensor | None = None, ignore_index: int = 255
    ) -> None:
        super().__init__()
        w = None if weight is None else torch.as_tensor(weight, dtype=torch.float32)
        self.register_buffer("weight", w, persistent=False)
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        options = {name: getattr(self, name) for name in self._options}
        return self.function(
            logits, target, weight=self.weight, ignore_index=self.ignore_index, **options
        )
