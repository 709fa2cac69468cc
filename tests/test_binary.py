"""Binary segmentation end to end: a one-channel sigmoid model (BCE + Dice) and a two-class softmax
model trained through ``pixelwise.engine.train``, then evaluated and used for prediction; the one
logits → probabilities/labels conversion (:mod:`pixelwise.outputs`); ModelMeta compatibility."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise import outputs
from pixelwise.config import RunConfig, load_config
from pixelwise.data import load_dataset_spec, load_pair, resolve_split
from pixelwise.engine import (
    ModelMeta,
    Segmenter,
    build_model,
    evaluate,
    load_checkpoint,
    predict_files,
    train,
)
from pixelwise.errors import PixelwiseError
from pixelwise.metrics import ConfusionMatrix

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


# --- the conversion -----------------------------------------------------------------------------


def test_one_channel_logits_are_sigmoid_probabilities_and_thresholded_labels() -> None:
    z = torch.tensor([[[[-2.0, 0.0], [0.5, 3.0]]]])  # N×1×H×W
    p = outputs.probabilities(z)
    assert p.shape == (1, 2, 2, 2)
    torch.testing.assert_close(p[:, 1], torch.sigmoid(z[:, 0]))
    torch.testing.assert_close(p.sum(1), torch.ones(1, 2, 2))
    torch.testing.assert_close(outputs.log_probabilities(z).exp(), p)
    assert outputs.labels(z).tolist() == [[[0, 0], [1, 1]]]  # σ(0) = 0.5 is not > 0.5
    # threshold 0.7: σ(0.5) = 0.62 → 0, σ(3) = 0.95 → 1
    assert outputs.labels(z, threshold=0.7).tolist() == [[[0, 0], [0, 1]]]
    assert outputs.labels(z, threshold=0.2).tolist() == [[[0, 1], [1, 1]]]  # σ(-2) = 0.12
    assert outputs.logit_threshold(0.5) == 0.0
    with pytest.raises(PixelwiseError, match="between 0 and 1"):
        outputs.labels(z, threshold=1.0)


def test_multi_channel_logits_are_softmax_and_argmax() -> None:
    x = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(outputs.probabilities(x), torch.softmax(x, 1))
    assert torch.equal(outputs.labels(x, threshold=0.9), x.argmax(1))
    # the pair (0, z) is the same model as the one channel z
    z = torch.randn(2, 1, 4, 5)
    two = torch.cat([torch.zeros_like(z), z], 1)
    torch.testing.assert_close(outputs.probabilities(two), outputs.probabilities(z))
    assert torch.equal(outputs.labels(two), outputs.labels(z))


# --- ModelMeta ------------------------------------------------------------------------------------

OLD_META = {  # written before ``output`` and ``threshold`` existed
    "arch": "unet",
    "num_classes": 2,
    "in_channels": 3,
    "class_names": ["background", "foreground"],
    "colors": [[0, 0, 0], [255, 255, 255]],
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "model_kwargs": {"base_channels": 4, "depth": 2},
    "dataset": "old",
}


def test_old_metadata_loads_as_softmax_and_sigmoid_metadata_builds_one_channel() -> None:
    meta = ModelMeta.from_dict(dict(OLD_META))
    assert meta.output == "softmax" and meta.threshold == 0.5 and meta.out_channels == 2
    assert build_model(meta)(torch.zeros(1, 3, 8, 8)).shape == (1, 2, 8, 8)
    sig = ModelMeta.from_dict({**OLD_META, "output": "sigmoid", "threshold": 0.3})
    assert sig.out_channels == 1
    assert build_model(sig)(torch.zeros(1, 3, 8, 8)).shape == (1, 1, 8, 8)
    assert ModelMeta.from_dict(sig.to_dict()) == sig
    with pytest.raises(PixelwiseError, match="needs exactly 2 classes"):
        three = {"class_names": ["a", "b", "c"], "colors": [[0, 0, 0], [9, 9, 9], [99, 99, 99]]}
        ModelMeta.from_dict({**OLD_META, **three, "num_classes": 3, "output": "sigmoid"})
    with pytest.raises(PixelwiseError, match="'softmax' or 'sigmoid'"):
        ModelMeta.from_dict({**OLD_META, "output": "tanh"})


# --- end to end -----------------------------------------------------------------------------------


def _binary_dataset(root: Path, n: int = 8, size: int = 24) -> Path:
    """Bright squares (foreground, mask 255) on a dark background (mask 0); a 2-pixel border of
    mask value 128 is unlabelled. Images 0-5 train, 6-7 val."""
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        y, x = rng.integers(2, size // 2, 2)
        mask[y : y + size // 3, x : x + size // 3] = 255
        img = (rng.random((size, size, 3)) * 60 + (mask[..., None] > 0) * 150).astype(np.uint8)
        mask[:2] = 128
        Image.fromarray(img).save(root / "images" / f"{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    (root / "data.yaml").write_text(
        "name: squares\nroot: .\nclasses:\n"
        "  - {name: background, color: [0, 0, 0], mask_value: 0}\n"
        "  - {name: square, color: [255, 0, 0], mask_value: 255}\n"
        "mask: {encoding: value_map, ignore_index: 128}\n"
        "splits:\n"
        "  train: {images: images, masks: masks, stems: ['0', '1', '2', '3', '4', '5']}\n"
        "  val: {images: images, masks: masks, stems: ['6', '7']}\n"
    )
    return root / "data.yaml"


def _cfg(data: Path, output: str, terms: list[dict], **loss) -> RunConfig:
    return RunConfig(
        data={"dataset": str(data), "train_split": "train", "val_split": "val"},
        model={"name": "unet", "params": {"base_channels": 4, "depth": 2}, "output": output},
        augment={"crop_size": [16, 16], "scale": [0.75, 1.25]},
        loss={"terms": terms, **loss},
        optim={"lr": 0.01},
        train={"epochs": 3, "batch_size": 3, "num_workers": 0, "amp": "off", "eval_batch_size": 2},
    )


CASES = {
    "sigmoid_bce_dice": (
        "sigmoid",
        [{"name": "bce"}, {"name": "dice", "params": {"include_background": False}}],
        {"class_weights": "median_frequency"},
    ),
    "softmax_ce_dice": ("softmax", [{"name": "ce"}, {"name": "dice"}], {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_binary_train_evaluate_predict(tmp_path: Path, case: str) -> None:
    output, terms, loss = CASES[case]
    data = _binary_dataset(tmp_path / "data")
    res = train(_cfg(data, output, terms, **loss), tmp_path / "run", progress=False)
    assert res.steps == 6 and res.best_miou is not None
    ckpt = load_checkpoint(tmp_path / "run" / "best.ckpt")
    assert ckpt["meta"]["output"] == output and ckpt["meta"]["num_classes"] == 2
    assert ckpt["model"]["head.weight"].shape[0] == (1 if output == "sigmoid" else 2)

    # evaluation: one 2-class confusion matrix, the same scores training's validation measured
    seg = Segmenter.from_checkpoint(tmp_path / "run" / "best.ckpt", device="cpu")
    spec = load_dataset_spec(data)
    result = evaluate(seg, spec, "val", num_workers=0, progress=False)
    assert result.confusion.matrix.shape == (2, 2)
    assert result.confusion.matrix.sum() == 2 * 22 * 24  # the unlabelled border never counts
    assert result.scores.miou == pytest.approx(res.best_miou, abs=1e-12)

    # the Segmenter API agrees with evaluation, pixel for pixel
    samples, _ = resolve_split(spec, "val")
    cm = ConfusionMatrix(2)
    for s in samples:
        image, mask = load_pair(s, spec)
        labels = seg.predict(image)
        proba = seg.predict_proba(image)
        assert labels.shape == mask.shape and labels.dtype == np.uint8
        assert proba.shape == (2, *mask.shape)
        np.testing.assert_allclose(proba.sum(0), 1.0, atol=1e-6)
        assert np.array_equal(labels, (proba[1] > 0.5) if output == "sigmoid" else proba.argmax(0))
        logits = seg.logits(seg.preprocess(image)[None])
        assert logits.shape == (1, 1 if output == "sigmoid" else 2, *mask.shape)
        cm.update(torch.from_numpy(labels), torch.from_numpy(mask.astype(np.int64)))
    assert torch.equal(cm.matrix, result.confusion.matrix)
    if output == "sigmoid":  # the threshold recorded in the metadata is the one applied
        seg.meta.threshold = 0.8
        image, _ = load_pair(samples[0], spec)
        assert np.array_equal(seg.predict(image), seg.predict_proba(image)[1] > 0.8)
        seg.meta.threshold = 0.5

    # predicting files: class-index masks and 2-class probabilities
    summary = predict_files(
        seg, [str(tmp_path / "data" / "images")], tmp_path / "pred", probs=True, progress=False
    )
    assert not summary.failed and len(summary.written) == 8
    mask = np.array(Image.open(tmp_path / "pred" / "6.png"))
    image, _ = load_pair(samples[0], spec)
    assert np.array_equal(mask, seg.predict(image))
    probs = np.load(tmp_path / "pred" / "6_probs.npy")
    assert probs.shape == (2, 24, 24)
    assert np.array_equal(mask, (probs[1] > 0.5) if output == "sigmoid" else probs.argmax(0))


def test_sigmoid_output_needs_two_classes_and_bce_one_channel(tmp_path: Path) -> None:
    data = _binary_dataset(tmp_path / "data")
    spec_text = (tmp_path / "data" / "data.yaml").read_text()
    three = tmp_path / "data" / "three.yaml"
    three.write_text(
        spec_text.replace(
            "  - {name: square, color: [255, 0, 0], mask_value: 255}\n",
            "  - {name: square, color: [255, 0, 0], mask_value: 255}\n"
            "  - {name: other, color: [0, 255, 0], mask_value: 7}\n",
        )
    )
    with pytest.raises(PixelwiseError, match="'sigmoid' is for binary data"):
        train(_cfg(three, "sigmoid", [{"name": "bce"}]), tmp_path / "a", progress=False)
    with pytest.raises(PixelwiseError, match="one-channel"):
        train(_cfg(data, "softmax", [{"name": "bce"}]), tmp_path / "b", progress=False)


@pytest.mark.slow
def test_membrane_one_channel_end_to_end(tmp_path: Path, require_data) -> None:  # noqa: ANN001
    require_data("membrane")
    cfg = load_config(
        CONFIGS / "membrane_unet_binary.yaml",
        [
            "model.params={base_channels: 4, depth: 2}",
            "augment.crop_size=[64, 64]",
            "train.epochs=1",
            "train.max_steps=3",
            "train.batch_size=2",
            "train.eval_batch_size=3",
            "train.num_workers=0",
            "train.amp=off",
        ],
    )
    res = train(cfg, tmp_path / "run", progress=False)
    assert res.steps == 3 and res.best_miou is not None
    seg = Segmenter.from_checkpoint(tmp_path / "run" / "best.ckpt", device="cpu")
    assert seg.meta.output == "sigmoid" and seg.class_names == ["membrane", "cell"]
    spec = load_dataset_spec(CONFIGS / "data" / "membrane.yaml")
    result = evaluate(seg, spec, "val", batch_size=3, num_workers=0, progress=False)
    assert result.num_images == 6
    assert int(result.confusion.matrix.sum()) == 6 * 512 * 512
    assert result.scores.miou == pytest.approx(res.best_miou, abs=1e-12)
