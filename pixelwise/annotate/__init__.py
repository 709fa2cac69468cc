"""Annotation helpers: which images to label next (:mod:`.active`)."""

from .active import (
    UNCERTAINTY_KINDS,
    image_uncertainty,
    random_order,
    rank_by_uncertainty,
    uncertainty_map,
)

__all__ = [
    "UNCERTAINTY_KINDS",
    "image_uncertainty",
    "random_order",
    "rank_by_uncertainty",
    "uncertainty_map",
]
