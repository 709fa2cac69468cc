"""Checkpoints: round trip, atomic writes, and refusal of anything but tensors and plain data."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import pixelwise
from pixelwise.engine.checkpoint import (
    FORMAT,
    ModelMeta,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from pixelwise.errors import PixelwiseError
from pixelwise.registry import create_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _meta(**kw) -> ModelMeta:
    return ModelMeta(
        arch="unet",
        num_classes=3,
        in_channels=3,
        class_names=["a", "b", "c"],
        colors=[[255, 0, 0], [0, 255, 0], [0, 0, 255]],
        mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225],
        model_kwargs={"base_channels": 4, "depth": 2},
        dataset="toy",
        **kw,
    )


def _trained_model(meta: ModelMeta) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(
        meta.arch, num_classes=meta.num_classes, in_channels=meta.in_channels, **meta.model_kwargs
    )
    with torch.no_grad():
        model.train()(torch.randn(2, 3, 20, 24))  # non-default batch-norm statistics
    return model.eval()


def test_round_trip_rebuilds_the_same_model(tmp_path: Path) -> None:
    meta = _meta()
    model = _trained_model(meta)
    path = tmp_path / "run" / "best.ckpt"
    save_checkpoint(path, {"meta": meta.to_dict(), "model": model.state_dict(), "epoch": 3})
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == FORMAT and ckpt["epoch"] == 3
    meta2 = ModelMeta.from_dict(ckpt["meta"])
    assert meta2 == meta
    rebuilt = build_model(meta2, ckpt["model"]).eval()
    x = torch.randn(1, 3, 29, 35)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))
    # the public loader gives a Segmenter with the same model and metadata
    seg = pixelwise.load(path, device="cpu")
    assert seg.class_names == ["a", "b", "c"]
    with torch.no_grad():  # the Segmenter runs NHWC (channels_last): equal up to float rounding
        torch.testing.assert_close(seg.logits(x), model(x), atol=1e-5, rtol=1e-5)
    image = np.random.default_rng(0).integers(0, 256, (29, 35, 3), dtype=np.uint8)
    labels = seg.predict(image)
    assert labels.shape == (29, 35) and labels.dtype == np.uint8 and labels.max() < 3


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    save_checkpoint(path, {"a": torch.ones(2)})
    save_checkpoint(path, {"a": torch.zeros(2)})  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    assert torch.equal(load_checkpoint(path)["a"], torch.zeros(2))


def test_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    save_checkpoint(path, {"a": torch.ones(2)})
    with pytest.raises(Exception):  # noqa: B017  (whatever pickling raises for a lambda)
        save_checkpoint(path, {"a": lambda: 0})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    assert torch.equal(load_checkpoint(path)["a"], torch.ones(2))


class _Evil:
    """Unpickling this calls ``open(marker, "w")``: the file appears if a loader runs it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_pickle_is_refused(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    payload = {"format": FORMAT, "model": {}, "x": _Evil(marker)}
    with open(path, "wb") as fh:
        if writer == "torch":
            torch.save(payload, fh)
        else:
            pickle.dump(payload, fh)
    # the payload is live: an unsafe loader would run it
    with open(path, "rb") as fh:
        if writer == "torch":
            torch.load(fh, weights_only=False)
        else:
            pickle.load(fh)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(PixelwiseError, match="refused") as exc:
        load_checkpoint(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)
    assert not marker.exists()
    with pytest.raises(PixelwiseError):
        pixelwise.load(path, device="cpu")
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_random_bytes_give_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "noise.ckpt"
    path.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(PixelwiseError) as exc:
        load_checkpoint(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("data", [b"e.", b"\x80\x02h\x05."], ids=["pop-empty-stack", "bad-memo"])
def test_garbage_that_breaks_the_unpickler_gives_one_line_error(
    tmp_path: Path, data: bytes
) -> None:
    path = tmp_path / "garbage.ckpt"
    path.write_bytes(data)
    with pytest.raises(PixelwiseError, match="garbage.ckpt"):
        load_checkpoint(path)


def test_other_unusable_files(tmp_path: Path) -> None:
    with pytest.raises(PixelwiseError, match="not found"):
        load_checkpoint(tmp_path / "missing.ckpt")
    plain = tmp_path / "plain.ckpt"
    torch.save({"model": {}}, plain)  # a torch file, but not a pixelwise checkpoint
    with pytest.raises(PixelwiseError, match="not a pixelwise checkpoint"):
        load_checkpoint(plain)
    truncated = tmp_path / "truncated.ckpt"
    save_checkpoint(truncated, {"a": torch.ones(100)})
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(PixelwiseError, match="truncated.ckpt"):
        load_checkpoint(truncated)


def test_empty_file_gives_one_line_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(PixelwiseError, match="empty.ckpt"):
        load_checkpoint(empty)


def test_missing_or_unexpected_weights(tmp_path: Path) -> None:
    meta = _meta()
    state = _trained_model(meta).state_dict()
    partial = {k: v for k, v in state.items() if not k.startswith("head.")}
    with pytest.raises(PixelwiseError, match="do not match") as exc:
        build_model(meta, partial)
    assert "head." in str(exc.value)
    with pytest.raises(PixelwiseError, match="unexpected"):
        build_model(meta, {**state, "extra.weight": torch.zeros(1)})
    with pytest.raises(PixelwiseError, match="malformed model metadata"):
        ModelMeta.from_dict({"arch": "unet"}, where="x.ckpt")


def test_weights_of_another_width_give_one_line_error() -> None:
    state = _trained_model(_meta()).state_dict()
    wider = _meta()
    wider.model_kwargs = {"base_channels": 8, "depth": 2}
    with pytest.raises(PixelwiseError, match="do not match"):
        build_model(wider, state)
