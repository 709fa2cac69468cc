"""Model files are checked before anything is built from them (GitHub issue 19, item 5).

A checkpoint's or bundle's metadata is untrusted input: the architecture's arguments are checked
against the limits declared beside its builder, the model's size and every weight's shape are
compared on PyTorch's ``meta`` device before a byte of the model is allocated, the classes, colours
and normalisation must be usable, and a bundle's SHA-256 is required and always checked.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from safetensors.torch import save_file as save_safetensors

from pixelwise.cli import main
from pixelwise.engine.bundle import bundle_info, read_bundle, write_bundle
from pixelwise.engine.checkpoint import ModelMeta, build_model, save_checkpoint, sha256_file
from pixelwise.engine.loading import load_model
from pixelwise.errors import PixelwiseError
from pixelwise.registry import (
    MAX_ITEMS,
    create_model,
    list_models,
    model_builder,
    model_limits,
    model_skeleton,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"base_channels": 8, "depth": 3}  # configs/smoke.yaml's U-Net: a 0.5 MB checkpoint
ROOT = Path(__file__).resolve().parents[1]


def _meta(**fields) -> dict:  # noqa: ANN003
    meta = {
        "arch": "unet",
        "num_classes": 3,
        "in_channels": 3,
        "class_names": ["a", "b", "c"],
        "colors": [[255, 0, 0], [0, 255, 0], [0, 0, 255]],
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "model_kwargs": dict(TINY),
    }
    return {**meta, **fields}


def _checkpoint(path: Path, **meta_fields) -> Path:  # noqa: ANN003
    """The tiny U-Net's real weights, saved with metadata that may say otherwise."""
    torch.manual_seed(0)
    model = create_model("unet", num_classes=3, in_channels=3, **TINY)
    save_checkpoint(path, {"meta": _meta(**meta_fields), "model": model.state_dict()})
    return path


# ---- the limits are declared next to every builder ----------------------------------------------


@pytest.mark.parametrize("name", list_models())
def test_every_size_argument_of_every_builder_has_a_limit(name: str) -> None:
    """An argument typed ``int`` (or a sequence of them) sets a width, a depth or a count: a new
    architecture must declare its range in ``register_model(..., limits=...)``."""
    limits = model_limits(name)
    for arg, p in inspect.signature(model_builder(name)).parameters.items():
        if "int" in str(p.annotation):
            assert arg in limits, f"{name}: declare a limit for {arg!r} in register_model"
        if arg in limits and p.default not in (p.empty, None, ()):
            low, high = limits[arg]
            items = p.default if isinstance(p.default, tuple) else (p.default,)
            assert all(low <= v <= high for v in items), f"{name}: default {arg} out of its limit"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"depth": 14}, "depth=14: must be an integer from 1 to 8"),
        ({"depth": 4.5}, "depth=4.5"),
        ({"depth": "4"}, "depth='4'"),
        ({"depth": True}, "depth=True"),
        ({"base_channels": 0}, "base_channels=0"),
        ({"num_classes": 0}, "num_classes=0"),
        ({"num_classes": 100_000}, "num_classes=100000"),
        ({"in_channels": 10_000}, "in_channels=10000"),
        ({"dropout": float("nan")}, "dropout=nan"),
    ],
)
def test_arguments_out_of_their_declared_limits_are_refused(kwargs: dict, needle: str) -> None:
    with pytest.raises(PixelwiseError) as info:
        create_model("unet", **{"num_classes": 3, **kwargs})
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_sequence_arguments_are_limited_item_by_item_and_in_length() -> None:
    with pytest.raises(PixelwiseError, match=r"bins=\[1, 2, 1000\]: each item must be"):
        model_skeleton("pspnet", num_classes=3, encoder="resnet18", bins=[1, 2, 1000])
    with pytest.raises(PixelwiseError, match=f"at most {MAX_ITEMS}"):
        model_skeleton("pspnet", num_classes=3, encoder="resnet18", bins=[1] * 10_000)


def test_a_model_too_large_is_refused_on_the_meta_device() -> None:
    """Each argument within its range, together 8.0 G parameters (30 GiB): refused unallocated."""
    with pytest.raises(PixelwiseError, match="parameters") as info:
        model_skeleton("unet", num_classes=3, base_channels=64, depth=8)
    assert "GiB" in str(info.value) and "500,000,000" in str(info.value)
    skeleton = model_skeleton("unet", num_classes=3, **TINY)  # a fine one: shapes, no memory
    assert all(p.is_meta for p in skeleton.parameters())


# ---- 5(a): a small checkpoint that describes a huge model ------------------------------------------

_CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_DATA, (3 << 30, 3 << 30))  # the old code fails here, safely
from pixelwise.engine.loading import load_model
from pixelwise.errors import PixelwiseError
from pixelwise.registry import list_models
list_models()  # every module imported before the measurement
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_model(sys.argv[1])
    result = "loaded"
except PixelwiseError as exc:
    result = "refused: " + str(exc)
except BaseException as exc:
    result = type(exc).__name__ + ": " + str(exc)[:300]
grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"result": result, "grew_mb": grew / 1024}))
"""


def _load_in_child(path: Path) -> dict:
    """Load ``path`` in a fresh process under a 3 GiB data limit; its result and how far its peak
    resident memory rose while loading."""
    r = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        # the file: depth 14 makes 127 G parameters (510 GB) of a 0.5 MB checkpoint
        ({"base_channels": 8, "depth": 14}, "depth=14: must be an integer from 1 to 8"),
        # each argument within its range, 8.0 G parameters (30 GiB) together
        ({"base_channels": 64, "depth": 8}, "parameters"),
        # a plausible 124 M-parameter U-Net (500 MB) whose weights are the tiny one's
        ({"base_channels": 256, "depth": 3}, "has shape"),
    ],
    ids=["depth-14", "too-many-parameters", "weights-of-another-shape"],
)
def test_a_checkpoint_describing_a_huge_model_is_refused_before_building(
    tmp_path: Path, kwargs: dict, needle: str
) -> None:
    path = _checkpoint(tmp_path / "small.ckpt", model_kwargs=kwargs)
    assert path.stat().st_size < 600_000
    out = _load_in_child(path)
    assert out["result"].startswith("refused: ") and needle in out["result"], out
    assert str(path) in out["result"] and "\n" not in out["result"]
    # before the fix: +1.1 GB up to the 3 GiB limit, then an allocation error; or 460 MB built
    # for nothing before the shapes were compared
    assert out["grew_mb"] < 100, out


def test_the_tiny_checkpoint_itself_loads(tmp_path: Path) -> None:
    loaded = load_model(_checkpoint(tmp_path / "ok.ckpt"))
    assert loaded.meta.model_kwargs == TINY and not loaded.model.training


# ---- 5(b), 5(c): classes, colours and normalisation ---------------------------------------------


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"class_names": ["a", "b"]}, "class_names has 2 names for num_classes 3"),
        ({"class_names": ["a", "b", "c", "d"]}, "class_names has 4 names"),
        ({"class_names": ["a", "a", "c"]}, "repeats a name"),
        ({"class_names": ["a", "", "c"]}, "non-empty names"),
        ({"colors": [[255, 0, 0], [0, 255, 0]]}, "colors has 2 colours for num_classes 3"),
        ({"colors": [[255, 0, 0], [0, 255, 0], [0, 0, 256]]}, "colors[2]"),
        ({"colors": [[255, 0, 0], [0, -1, 0], [0, 0, 255]]}, "colors[1]"),
        ({"colors": [[255, 0, 0], [0, 255], [0, 0, 255]]}, "colors[1]"),
        ({"mean": [0.5, float("nan"), 0.5]}, "mean must be finite"),
        ({"mean": [0.5, 0.5, float("inf")]}, "mean must be finite"),
        ({"std": [0.25, 0.0, 0.25]}, "std must be finite and positive"),
        ({"std": [0.25, -0.25, 0.25]}, "std must be finite and positive"),
        ({"std": [float("nan")] * 3}, "std must be finite and positive"),
        ({"mean": [0.5]}, "mean must be 3 number(s)"),
        ({"std": [0.25] * 4}, "std must be 3 number(s)"),
        ({"num_classes": 0, "class_names": [], "colors": []}, "num_classes must be"),
        ({"in_channels": 0, "mean": [], "std": []}, "in_channels must be"),
    ],
)
def test_unusable_metadata_is_refused_at_load_in_one_line(
    tmp_path: Path, fields: dict, needle: str
) -> None:
    path = _checkpoint(tmp_path / "bad.ckpt", **fields)
    with pytest.raises(PixelwiseError) as info:
        load_model(path)
    msg = str(info.value)
    assert needle in msg and str(path) in msg and "\n" not in msg, msg


def test_nan_normalisation_stops_predict_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It used to write an all-zero mask and exit 0."""
    from PIL import Image

    path = _checkpoint(tmp_path / "nan.ckpt", std=[float("nan")] * 3)
    image = tmp_path / "in.png"
    Image.new("RGB", (24, 16), (90, 120, 30)).save(image)
    with pytest.raises(SystemExit) as info:
        main(["predict", str(image), "--model", str(path), "--out", str(tmp_path / "out"),
              "--quiet", "--device", "cpu"])  # fmt: skip
    assert info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and "std must be finite and positive" in line
    assert not (tmp_path / "out" / "in.png").exists()


def test_build_model_names_the_file_and_checks_kwargs_against_the_signature() -> None:
    meta = ModelMeta.from_dict(_meta(model_kwargs={"depht": 3}))
    with pytest.raises(PixelwiseError, match="x.ckpt: model 'unet' has no argument.*depht"):
        build_model(meta, where="x.ckpt")
    meta = ModelMeta.from_dict(_meta(arch="unetz"))
    with pytest.raises(PixelwiseError, match="unknown model 'unetz'"):
        build_model(meta)


# ---- 5(d): a bundle's checksum is required and always checked -------------------------------------


def _bundle(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = create_model("unet", num_classes=3, in_channels=3, **TINY)
    return write_bundle((model, ModelMeta.from_dict(_meta())), tmp_path, "tiny")


@pytest.mark.parametrize("digest", ["", None, "abc", "z" * 64, 12], ids=str)
def test_a_bundle_without_a_valid_sha256_is_refused(tmp_path: Path, digest: object) -> None:
    path = _bundle(tmp_path)
    desc = json.loads(path.read_text())
    if digest is None:
        del desc["sha256"]
    else:
        desc["sha256"] = digest
    path.write_text(json.dumps(desc))
    for fn in (bundle_info, read_bundle):
        with pytest.raises(
            PixelwiseError, match="'sha256' must be the SHA-256 of tiny.safetensors"
        ):
            fn(path)


def test_tampered_weights_with_an_emptied_checksum_are_refused(tmp_path: Path) -> None:
    """The issue's attack: valid safetensors with other values, and ``"sha256": ""``."""
    path = _bundle(tmp_path)
    weights = path.with_suffix(".safetensors")
    tensors = load_file(str(weights))
    tensors["head.bias"][0] = 100.0  # class "a" everywhere
    save_safetensors(tensors, str(weights))
    desc = json.loads(path.read_text())
    with pytest.raises(PixelwiseError, match="checksum does not match"):
        read_bundle(path)
    desc["sha256"] = ""
    path.write_text(json.dumps(desc))
    with pytest.raises(PixelwiseError, match="'sha256' must be"):
        read_bundle(path)
    desc["sha256"] = sha256_file(weights).upper()  # the right digest, in capitals: accepted
    path.write_text(json.dumps(desc))
    assert read_bundle(path)[1].class_names == ["a", "b", "c"]


@pytest.mark.parametrize("name", ["camvid", "membrane"])
def test_the_shipped_bundles_still_load(name: str) -> None:
    model, meta, info = read_bundle(name)
    assert sum(p.numel() for p in model.parameters()) == info["parameters"]
    assert len(meta.class_names) == len(meta.colors) == meta.num_classes
