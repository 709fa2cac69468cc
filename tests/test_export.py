"""ONNX export and ONNX Runtime inference: every registered architecture exported once and compared
with PyTorch at two input sizes (one not a multiple of any stride), the export-friendly adaptive
pooling against ``F.adaptive_avg_pool2d``, the metadata round trip, dynamic batch, the runtime model
inside a :class:`Segmenter`, and the one-line errors.

Models are the small configurations of ``tests/test_models.py`` (the ``test_resnet`` timm encoder,
U-Net at 8 base channels). Parity tolerance: max |Δ logit| ≤ 1e-4 · max(1, max |logit|); ONNX
Runtime and PyTorch agree to about 1e-7 on these models.
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")

from pixelwise.engine.checkpoint import ModelMeta, save_checkpoint  # noqa: E402
from pixelwise.engine.export import (  # noqa: E402
    META_KEY,
    check_onnx,
    compare_onnx,
    export_checkpoint,
    export_onnx,
)
from pixelwise.engine.onnx_model import OnnxModule, load_onnx  # noqa: E402
from pixelwise.errors import PixelwiseError  # noqa: E402
from pixelwise.layers import PyramidPooling  # noqa: E402
from pixelwise.layers.pooling import AdaptiveAvgPool2d, adaptive_avg_pool2d  # noqa: E402
from pixelwise.registry import create_model, list_models, model_builder  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS = list_models()
NUM_CLASSES = 3
SIZES = [(64, 96), (75, 101)]  # (H, W): a multiple of 32, and one of no stride
TINY = "test_resnet" if timm.is_model("test_resnet") else "resnet18"
# as in test_models.py: small settings for whichever of these arguments a builder accepts
_SMALL = {"base_channels": 8, "pretrained": False, "encoder": TINY}


def _small_kwargs(name: str) -> dict:
    params = inspect.signature(model_builder(name)).parameters
    return {k: v for k, v in _SMALL.items() if k in params}


def _meta(name: str, kwargs: dict, *, num_classes: int = NUM_CLASSES, **fields) -> ModelMeta:
    return ModelMeta(
        arch=name,
        num_classes=num_classes,
        in_channels=3,
        class_names=[f"class{i}" for i in range(num_classes)],
        colors=[[i, 2 * i, 3 * i] for i in range(num_classes)],
        mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225],
        model_kwargs=kwargs,
        **fields,
    )


def _trained_looking(model: nn.Module) -> nn.Module:
    """Move batch-norm statistics off their defaults and give zero-initialised layers (FCN's score
    layers) random weights, so the logits are not trivially equal."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.1)
        model.train()(torch.randn(2, 3, 64, 64))
    return model.eval()


def _tolerance(model: nn.Module) -> float:
    with torch.no_grad():
        scale = model(torch.randn(1, 3, *SIZES[1])).abs().max().item()
    return 1e-4 * max(1.0, scale)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[nn.Module, Path]]:
    """``exported(name)``: the small model of architecture ``name`` and its ONNX file (exported at
    48×80, batch 2, once per module)."""
    cache: dict[str, tuple[nn.Module, Path]] = {}

    def get(name: str) -> tuple[nn.Module, Path]:
        if name not in cache:
            torch.manual_seed(0)
            kwargs = _small_kwargs(name)
            model = _trained_looking(create_model(name, num_classes=NUM_CLASSES, **kwargs))
            path = tmp_path_factory.mktemp("onnx") / f"{name}.onnx"
            export_onnx(model, _meta(name, kwargs), path, sample_size=(48, 80))
            cache[name] = (model, path)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, ModelMeta, Path, Path]:
    """A tiny sigmoid (one-channel) U-Net saved as a checkpoint and exported with
    :func:`export_checkpoint`: (model, meta, checkpoint, onnx file)."""
    kwargs = {"base_channels": 4, "depth": 2}
    meta = _meta("unet", kwargs, num_classes=2, output="sigmoid", threshold=0.3, dataset="toy")
    torch.manual_seed(0)
    model = _trained_looking(create_model("unet", num_classes=1, **kwargs))
    root = tmp_path_factory.mktemp("binary")
    ckpt = root / "best.ckpt"
    save_checkpoint(ckpt, {"meta": meta.to_dict(), "model": model.state_dict()})
    path = export_checkpoint(ckpt, root / "model.onnx", sample_size=(32, 32))
    return model, meta, ckpt, path


# --- export-friendly adaptive pooling -------------------------------------------------------------


@pytest.mark.parametrize("bins", [1, 2, 3, 6, (2, 5)])
def test_adaptive_pooling_equals_pytorch(bins: int | tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(0)
    for h in [1, 2, 3, 4, 5, 6, 7, 12, 13, 17, 31]:
        for w in [1, 2, 5, 6, 11, 17, 24]:
            x = torch.randn(2, 3, h, w, generator=gen)
            ours, ref = adaptive_avg_pool2d(x, bins), F.adaptive_avg_pool2d(x, bins)
            assert ours.shape == ref.shape
            torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0, msg=f"{h}×{w}, bins {bins}")
    x = torch.randn(1, 4, 13, 17, generator=gen)
    torch.testing.assert_close(
        AdaptiveAvgPool2d(bins)(x), nn.AdaptiveAvgPool2d(bins)(x), atol=1e-6, rtol=0
    )


def test_pyramid_pooling_keeps_its_state_dict_keys() -> None:
    """The pooling has no parameters and keeps index 0 of each stage, so old checkpoints load."""
    ppm = PyramidPooling(8, (1, 2, 3, 6))
    assert all(isinstance(stage[0], AdaptiveAvgPool2d) for stage in ppm.stages)
    assert [stage[0].output_size for stage in ppm.stages] == [1, 2, 3, 6]
    assert {k.split(".", 3)[2] for k in ppm.state_dict()} == {"1"}
    assert "torch.nn.modules.pooling" not in {type(m).__module__ for m in ppm.modules()}


def test_adaptive_pooling_exports_for_any_size() -> None:
    import onnxruntime

    class Pools(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([adaptive_avg_pool2d(x, b).flatten(2) for b in (1, 2, 3, 6)], dim=2)

    dims = {0: torch.export.Dim("n"), 2: torch.export.Dim("h"), 3: torch.export.Dim("w")}
    program = torch.onnx.export(
        Pools().eval(),
        (torch.randn(2, 3, 12, 12),),
        dynamo=True,
        dynamic_shapes=(dims,),
        verbose=False,
    )
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        program.model_proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    for h, w in [(13, 17), (4, 5), (12, 12), (1, 7)]:
        x = torch.randn(2, 3, h, w)
        ref = torch.cat([F.adaptive_avg_pool2d(x, b).flatten(2) for b in (1, 2, 3, 6)], dim=2)
        (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        torch.testing.assert_close(torch.from_numpy(out), ref, atol=1e-6, rtol=0, msg=f"{h}×{w}")


# architectures built from the same blocks as a faster sibling (deeplabv3plus, fcn8s, unet, pspnet)
_SLOW = {"deeplabv1", "deeplabv2", "deeplabv3", "fcn16s", "fcn32s", "unet_encoder"}


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.mark.parametrize(
    "name", [pytest.param(m, marks=pytest.mark.slow) if m in _SLOW else m for m in MODELS]
)
def test_onnx_matches_pytorch_at_two_sizes(name: str, exported: Callable) -> None:
    model, path = exported(name)
    graph = onnx.load(str(path)).graph
    assert [(v.name, _dims(v)) for v in [*graph.input, *graph.output]] == [
        ("image", ["batch", 3, "height", "width"]),
        ("logits", ["batch", NUM_CLASSES, "height", "width"]),
    ]
    onnx_model, meta = load_onnx(path, device="cpu", threads=1)
    assert meta.arch == name
    diffs = compare_onnx(model, onnx_model, meta, sizes=SIZES, batch=2)
    tol = _tolerance(model)
    assert [size for size, _ in diffs] == SIZES
    assert all(d <= tol for _, d in diffs), f"{name}: max |Δ logit| {diffs}, tolerance {tol:.1e}"


# --- metadata, batch, checkpoints, the Segmenter --------------------------------------------------


def test_metadata_round_trip(binary: tuple) -> None:
    _, meta, _, path = binary
    model, loaded = load_onnx(path, device="cpu", threads=1)
    assert loaded == meta
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props[META_KEY]) == meta.to_dict()


def test_dynamic_batch_and_one_logit_channel(binary: tuple) -> None:
    model, _, _, path = binary
    onnx_model, _ = load_onnx(path, device="cpu", threads=1)
    for n in (1, 3):
        x = torch.randn(n, 3, 29, 41)
        with torch.no_grad():
            ref = model(x)
        out = onnx_model(x)
        assert out.shape == (n, 1, 29, 41) and out.dtype == torch.float32
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)


def test_check_onnx_compares_with_the_checkpoint(binary: tuple) -> None:
    _, _, ckpt, path = binary
    diffs = check_onnx(ckpt, path, sizes=[(32, 32), (21, 35)])
    assert [size for size, _ in diffs] == [(32, 32), (21, 35)]
    assert all(d < 1e-4 for _, d in diffs)


def test_onnx_module_stands_in_for_a_torch_model(binary: tuple) -> None:
    from pixelwise.engine.predictor import Segmenter

    model, meta, _, path = binary
    onnx_model, _ = load_onnx(path, device="cpu", threads=1)
    assert onnx_model.to("cpu") is onnx_model and onnx_model.eval() is onnx_model
    assert onnx_model.to(memory_format=torch.channels_last) is onnx_model
    assert list(onnx_model.parameters()) == []
    x = torch.randn(2, 3, 24, 40).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(onnx_model(x), model(x).detach(), atol=1e-4, rtol=0)
    ours, ref = Segmenter(onnx_model, meta, device="cpu"), Segmenter(model, meta, device="cpu")
    batch = torch.randn(1, 3, 24, 40)
    torch.testing.assert_close(ours.logits(batch), ref.logits(batch), atol=1e-4, rtol=0)
    loaded = Segmenter.from_checkpoint(path, device="cpu")
    assert isinstance(loaded.model, OnnxModule) and loaded.meta == meta


def test_export_is_atomic_restores_the_mode_and_replaces_the_file(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 1, 1))
    meta = _meta("custom", {}, num_classes=2, output="sigmoid")
    out = tmp_path / "sub" / "m.onnx"
    out.parent.mkdir()
    out.write_bytes(b"old")
    assert export_onnx(model.train(), meta, out, sample_size=(16, 16)) == out
    assert model.training  # exported in eval mode, then put back
    assert [p.name for p in out.parent.iterdir()] == ["m.onnx"]  # no temporary file left
    onnx_model, loaded = load_onnx(out, device="cpu", threads=1)
    assert loaded == meta
    x = torch.randn(2, 3, 7, 9)
    torch.testing.assert_close(onnx_model(x), model.eval()(x).detach(), atol=1e-5, rtol=0)


# --- errors ---------------------------------------------------------------------------------------


def _one_line(exc: pytest.ExceptionInfo, *needles: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, msg


def _identity_onnx(path: Path, metadata: dict[str, str]) -> Path:
    value = onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, ["n", 3, "h", "w"])
    out = onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["n", 3, "h", "w"])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["image"], ["logits"])], "g", [value], [out]
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.helper.set_model_props(model, metadata)
    onnx.save_model(model, str(path))
    return path


def test_load_errors_are_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(PixelwiseError) as exc:
        load_onnx(tmp_path / "missing.onnx")
    _one_line(exc, "missing.onnx", "not found")
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a protobuf\xff" * 10)
    with pytest.raises(PixelwiseError) as exc:
        load_onnx(tmp_path / "junk.onnx")
    _one_line(exc, "junk.onnx", "not an ONNX model")
    with pytest.raises(PixelwiseError) as exc:
        load_onnx(_identity_onnx(tmp_path / "plain.onnx", {}))
    _one_line(exc, "plain.onnx", "without pixelwise metadata")
    with pytest.raises(PixelwiseError) as exc:
        load_onnx(_identity_onnx(tmp_path / "bad.onnx", {META_KEY: "{not json"}))
    _one_line(exc, "bad.onnx", "malformed pixelwise metadata")
    with pytest.raises(PixelwiseError) as exc:
        load_onnx(_identity_onnx(tmp_path / "bad2.onnx", {META_KEY: '{"arch": "unet"}'}))
    _one_line(exc, "bad2.onnx", "malformed model metadata")


def test_wrong_input_channels_and_devices(tmp_path: Path) -> None:
    meta = json.dumps(_meta("unet", {}).to_dict())
    path = _identity_onnx(tmp_path / "id.onnx", {META_KEY: meta})
    model, _ = load_onnx(path, device="cpu")
    torch.testing.assert_close(model(torch.ones(1, 3, 2, 5)), torch.ones(1, 3, 2, 5))
    with pytest.raises(PixelwiseError) as exc:
        model(torch.ones(1, 1, 2, 5))
    _one_line(exc, "id.onnx", "N×3×H×W")
    with pytest.raises(PixelwiseError) as exc:
        load_onnx(path, device="tpu")
    _one_line(exc, "id.onnx", "tpu")
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(PixelwiseError) as exc:
            load_onnx(path, device="cuda")
        _one_line(exc, "id.onnx", "CUDA provider")
        assert load_onnx(path, device="auto")[0].session.get_providers() == ["CPUExecutionProvider"]


def test_missing_onnxruntime_or_exporter_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _identity_onnx(tmp_path / "id.onnx", {META_KEY: json.dumps(_meta("unet", {}).to_dict())})
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(PixelwiseError) as exc:
        load_onnx(path)
    _one_line(exc, "onnxruntime", "pip install 'pixelwise[onnx]'")
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(PixelwiseError) as exc:
        export_onnx(nn.Conv2d(3, 3, 1), _meta("unet", {}), tmp_path / "x.onnx")
    _one_line(exc, "onnxscript", "pip install 'pixelwise[onnx]'")
    assert not (tmp_path / "x.onnx").exists()


def test_export_checks_the_logit_channels_and_sample_size(tmp_path: Path) -> None:
    model = nn.Conv2d(3, 2, 1)
    with pytest.raises(PixelwiseError) as exc:
        export_onnx(model, _meta("unet", {}), tmp_path / "x.onnx", sample_size=(8, 8))
    _one_line(exc, "2 logit channels", "3")
    with pytest.raises(PixelwiseError) as exc:
        export_onnx(model, _meta("unet", {}), tmp_path / "x.onnx", sample_size=(8,))
    _one_line(exc, "sample_size")
    assert not (tmp_path / "x.onnx").exists()
    assert list(tmp_path.iterdir()) == []
