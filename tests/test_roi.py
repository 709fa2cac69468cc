"""Region-of-interest masks: pixels outside a split's ROI are ignored by training and every score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pixelwise.config import RunConfig
from pixelwise.data import SegmentationDataset, build_train_transform, load_dataset_spec
from pixelwise.data.spec import resolve_split
from pixelwise.data.validate import check_split
from pixelwise.engine import Segmenter, evaluate, load_checkpoint, train
from pixelwise.engine.checkpoint import ModelMeta
from pixelwise.engine.inference import InferenceConfig
from pixelwise.engine.loading import LoadedModel
from pixelwise.errors import PixelwiseError

RED, GREEN = (255, 0, 0), (0, 255, 0)


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _yaml(root: Path, split: str) -> Path:
    (root / "data.yaml").write_text(
        "name: roi\nroot: .\nclasses: [{name: a}, {name: b}]\n"
        f"mask: {{encoding: index}}\nsplits:\n  s: {split}\n"
    )
    return root / "data.yaml"


def _colour_dataset(root: Path, *, roi: bool = True) -> Path:
    """Two 4×4 images: left half red, right half green; masks all class 0; the ROI (``{id}_fov``)
    leaves out the top row and the rightmost column."""
    img = np.zeros((4, 4, 3), np.uint8)
    img[:, :2], img[:, 2:] = RED, GREEN
    fov = np.zeros((4, 4), np.uint8)
    fov[1:, :3] = 255
    for i in range(2):
        _save(root / "im" / f"{i}.png", img)
        _save(root / "gt" / f"{i}.png", np.zeros((4, 4), np.uint8))
        _save(root / "fov" / f"{i}_fov.png", fov)
    extra = ", roi: fov, pair: {roi: '{id}_fov'}" if roi else ""
    return _yaml(root, f"{{images: im, masks: gt{extra}}}")


class _RedGreen(nn.Module):
    """Class 0 where the image is red, class 1 where it is green (logits = the first two channels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :2]


def _segmenter() -> Segmenter:
    meta = ModelMeta(
        arch="unet",
        num_classes=2,
        in_channels=3,
        class_names=["a", "b"],
        colors=[[0, 0, 0], [255, 255, 255]],
        mean=[0.5, 0.5, 0.5],
        std=[0.25, 0.25, 0.25],
        model_kwargs={},
    )
    return Segmenter(LoadedModel(_RedGreen().eval(), meta), config=InferenceConfig(), device="cpu")


@pytest.mark.parametrize("roi", [False, True])
def test_confusion_matrix_counts_only_inside_the_roi(tmp_path: Path, roi: bool) -> None:
    spec = load_dataset_spec(_colour_dataset(tmp_path, roi=roi))
    result = evaluate(_segmenter(), spec, "s", batch_size=2, num_workers=0, progress=False)
    # per image: without ROI 8 right (red, class 0) and 8 wrong (green predicted 1); the ROI keeps
    # rows 1-3 of columns 0-2: 6 right and 3 wrong
    expected = [[16, 16], [0, 0]] if not roi else [[12, 6], [0, 0]]
    assert result.confusion.matrix.tolist() == expected


def test_list_files_give_the_roi_as_a_third_column(tmp_path: Path) -> None:
    _colour_dataset(tmp_path)
    (tmp_path / "l.txt").write_text("im/0.png\tgt/0.png\tfov/0_fov.png\nim/1.png\tgt/1.png\n")
    spec = load_dataset_spec(_yaml(tmp_path, "{list: l.txt}"))
    samples, problems = resolve_split(spec, "s")
    assert not problems and samples[0].roi == tmp_path / "fov/0_fov.png" and samples[1].roi is None
    result = evaluate(_segmenter(), spec, "s", batch_size=1, num_workers=0, progress=False)
    assert result.confusion.matrix.tolist() == [[6 + 8, 3 + 8], [0, 0]]


def test_roi_pairing_problems_and_refusals(tmp_path: Path) -> None:
    _colour_dataset(tmp_path)
    (tmp_path / "fov" / "1_fov.png").unlink()
    spec = load_dataset_spec(
        _yaml(tmp_path, "{images: im, masks: gt, roi: fov, pair: {roi: '{id}_fov'}}")
    )
    _, problems = resolve_split(spec, "s")
    assert problems == [
        f"roi: {tmp_path / 'im' / '1.png'}: no mask named 1_fov.* in {tmp_path / 'fov'}"
    ]
    with pytest.raises(PixelwiseError, match="1 image folder.* but 2 roi folder"):
        load_dataset_spec(_yaml(tmp_path, "{images: im, masks: gt, roi: [fov, fov]}"))
    with pytest.raises(PixelwiseError, match="roi applies to paired folders"):
        load_dataset_spec(_yaml(tmp_path, "{list: l.txt, roi: fov}"))


def test_an_roi_of_another_size_is_refused_in_one_line(tmp_path: Path) -> None:
    spec = load_dataset_spec(_colour_dataset(tmp_path))
    _save(tmp_path / "fov" / "1_fov.png", np.ones((3, 4), np.uint8))
    report = check_split(spec, "s")
    assert report.problems == [
        f"{tmp_path / 'fov' / '1_fov.png'}: roi size 4x3 != image size 4x4 (1.png)"
    ]
    ds = SegmentationDataset(
        spec, "s", build_train_transform(crop_size=None, scale=(1, 1), mean=[0] * 3, std=[1] * 3)
    )
    with pytest.raises(
        PixelwiseError, match=r"^\S+1_fov.png: roi size 4x3 != image size 4x4 \(1.png\)$"
    ):
        ds[1]


def test_geometric_augmentation_keeps_the_roi_aligned(tmp_path: Path) -> None:
    """The image encodes each pixel's position; after random crops, flips and rotations, exactly
    the pixels that came from outside the ROI are ignored, and the others keep their label."""
    size = 12
    y, x = np.mgrid[:size, :size]
    img = np.stack([x * 20, y * 20, np.zeros_like(x)], axis=-1).astype(np.uint8)
    labels = ((x + 2 * y) % 2).astype(np.uint8)
    fov = ((x < 7) & (y > 2)).astype(np.uint8)
    _save(tmp_path / "im" / "0.png", img)
    _save(tmp_path / "gt" / "0.png", labels)
    _save(tmp_path / "fov" / "0.png", fov)
    spec = load_dataset_spec(_yaml(tmp_path, "{images: im, masks: gt, roi: fov}"))
    transform = build_train_transform(
        crop_size=(8, 8), scale=(1.0, 1.0), vflip=True, rotate90=True, mean=[0] * 3, std=[1] * 3
    )
    ds = SegmentationDataset(spec, "s", transform)
    seen = set()
    for epoch in range(12):
        item = ds[(epoch, 0)]
        sx = torch.round(item["image"][0] * 255 / 20).long().numpy()
        sy = torch.round(item["image"][1] * 255 / 20).long().numpy()
        expected = np.where(fov[sy, sx] > 0, labels[sy, sx], 255)
        assert (item["mask"].numpy() == expected).all(), epoch
        seen.add((sx[0, 0], sy[0, 0], sx[0, 1] - sx[0, 0], sy[0, 1] - sy[0, 0]))
    assert len(seen) > 3  # the crops and flips did move the pattern


def _split_dataset(root: Path, outside: int) -> Path:
    """8 toy images whose masks hold ``outside`` where the ROI (the left half) is 0."""
    rng = np.random.default_rng(0)
    fov = np.zeros((16, 16), np.uint8)
    fov[:, :8] = 1
    for i in range(8):
        mask = np.zeros((16, 16), np.uint8)
        mask[4:12] = 1
        mask[fov == 0] = outside
        img = (rng.random((16, 16, 3)) * 255).astype(np.uint8)  # the same whatever ``outside``
        _save(root / "im" / f"{i}.png", img)
        _save(root / "gt" / f"{i}.png", mask)
        _save(root / "fov" / f"{i}.png", fov * 255)
    (root / "data.yaml").write_text(
        "name: roi\nroot: .\nclasses: [{name: a}, {name: b}]\nmask: {encoding: index}\nsplits:\n"
        "  roi: {images: im, masks: gt, roi: fov}\n  plain: {images: im, masks: gt}\n"
    )
    return root / "data.yaml"


def _weights(data: Path, split: str, out: Path) -> dict[str, torch.Tensor]:
    cfg = RunConfig(
        data={"dataset": str(data), "train_split": split, "val_split": None},
        model={"name": "unet", "params": {"base_channels": 4, "depth": 2}},
        augment={"crop_size": [12, 12], "scale": [1.0, 1.0]},
        optim={"lr": 0.05},
        train={"epochs": 1, "batch_size": 4, "num_workers": 0, "amp": "off", "seed": 1},
    )
    train(cfg, out, progress=False)
    return load_checkpoint(out / "last.ckpt")["model"]


def test_training_loss_ignores_pixels_outside_the_roi(tmp_path: Path) -> None:
    zeros, ones = _split_dataset(tmp_path / "zeros", 0), _split_dataset(tmp_path / "ones", 1)
    a = _weights(zeros, "roi", tmp_path / "a")
    b = _weights(ones, "roi", tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)  # the targets outside the ROI changed nothing
    c = _weights(zeros, "plain", tmp_path / "c")
    d = _weights(ones, "plain", tmp_path / "d")
    assert not all(torch.equal(c[k], d[k]) for k in c)  # ... which they do without it
