"""The JSON bodies of the service's answers, as pydantic models: they document ``/openapi.json``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ClassArea",
    "EncodedImage",
    "ErrorBody",
    "Inference",
    "Limits",
    "Mask",
    "ModelClass",
    "ModelInfo",
    "ModelList",
    "Region",
    "RLEClass",
    "SegmentResult",
    "Status",
]


class ErrorBody(BaseModel):
    """Every error answer: one line naming the problem."""

    error: str


class Status(BaseModel):
    status: str
    model: str | None = None


class ClassArea(BaseModel):
    """A class present in the prediction."""

    index: int
    name: str
    pixels: int
    fraction: float = Field(description="Share of the image's pixels, 0..1.")


class Region(BaseModel):
    """One 8-connected region of one class."""

    model_config = ConfigDict(populate_by_name=True)

    class_: str = Field(alias="class", description="The class name.")
    index: int = Field(description="The class index.")
    bbox: list[int] = Field(
        description="[x0, y0, x1, y1], ends exclusive: columns x0 <= x < x1, rows y0 <= y < y1."
    )
    area: int = Field(description="Pixels in the region.")


class RLEClass(BaseModel):
    """One class's mask as COCO's uncompressed RLE: column-major runs, the first one of zeros."""

    index: int
    name: str
    size: list[int] = Field(description="[height, width]")
    counts: list[int]


class Mask(BaseModel):
    encoding: Literal["png_base64", "rle"]
    data: str | list[RLEClass] = Field(
        description="png_base64: the class-index PNG (palette = class colours), base64; "
        "rle: one COCO RLE per class present."
    )


class EncodedImage(BaseModel):
    encoding: Literal["png_base64"]
    data: str


class Inference(BaseModel):
    """The options a prediction was made with."""

    crf: bool
    tta: bool
    tile: Literal["auto", "whole", "slide"]


class SegmentResult(BaseModel):
    """``POST /v1/segment?format=json``."""

    model: str
    width: int
    height: int
    classes: list[ClassArea]
    regions: list[Region] = Field(description="Largest first, at most the server's max_regions.")
    regions_total: int = Field(description="Regions found, before the max_regions cut.")
    mask: Mask
    overlay: EncodedImage | None = Field(
        None, description="With overlay=true: the image blended with the class colours, legend."
    )
    inference: Inference


class ModelClass(BaseModel):
    index: int
    name: str
    color: list[int] = Field(description="[r, g, b], as in the mask PNG's palette.")


class ModelInfo(BaseModel):
    name: str
    arch: str
    dataset: str
    in_channels: int
    input_size: list[int] | None = Field(
        None, description="[height, width] the model needs, or null: any size."
    )
    output: Literal["softmax", "sigmoid"]
    classes: list[ModelClass]
    defaults: Inference


class Limits(BaseModel):
    max_upload_bytes: int
    max_pixels: int
    max_batch: int
    queue_size: int
    timeout_s: float
    max_regions: int
    max_uploads_per_client: int = Field(description="0: no cap.")
    upload_memory_bytes: int
    decode_memory_bytes: int


class ModelList(BaseModel):
    """``GET /v1/models``."""

    models: list[ModelInfo]
    limits: Limits
