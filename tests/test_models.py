"""Every registered model: forward/backward, any input size, gradients, state-dict round trip; and
the registry's contract (duplicates, unknown or ``None`` arguments)."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import pixelwise
from pixelwise import registry
from pixelwise.errors import PixelwiseError
from pixelwise.registry import create_model, list_models, model_builder, register_model

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS = list_models()
NUM_CLASSES = 3

# small settings for whichever of these arguments a builder accepts
_SMALL = {"base_channels": 8, "pretrained": False}


def _small_kwargs(name: str, **overrides) -> dict:
    params = inspect.signature(model_builder(name)).parameters
    kw = {k: v for k, v in _SMALL.items() if k in params}
    return {"num_classes": NUM_CLASSES, **kw, **overrides}


def _small(name: str, seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, **_small_kwargs(name, **overrides))


def test_registry_lists_unet() -> None:
    assert "unet" in MODELS
    assert MODELS == sorted(MODELS)
    assert pixelwise.list_models() == MODELS


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(("n", "h", "w"), [(1, 97, 131), (2, 33, 47), (2, 64, 64)])
def test_forward_backward_any_size(name: str, n: int, h: int, w: int) -> None:
    model = _small(name).train()
    x = torch.randn(n, 3, h, w)
    out = model(x)
    assert out.shape == (n, NUM_CLASSES, h, w)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [k for k, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without a gradient: {missing[:5]}"
    for k, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), k
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_one_input_channel(name: str) -> None:
    model = _small(name, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 37, 41)).shape == (1, NUM_CLASSES, 37, 41)


@pytest.mark.parametrize("name", MODELS)
def test_state_dict_round_trip(name: str) -> None:
    a = _small(name, seed=0).train()
    with torch.no_grad():
        a(torch.randn(2, 3, 40, 48))  # move batch-norm statistics away from their defaults
    b = _small(name, seed=1)
    x = torch.randn(2, 3, 45, 51)
    a.eval()
    b.eval()
    with torch.no_grad():
        assert not torch.equal(a(x), b(x))
        missing, unexpected = b.load_state_dict(a.state_dict())
        assert not missing and not unexpected
        assert torch.equal(a(x), b(x))


def test_unet_defaults_are_the_original_unet() -> None:
    model = create_model("unet", num_classes=2)
    assert model.encoder.channels == [64, 128, 256, 512, 1024]
    n = sum(p.numel() for p in model.parameters())
    assert round(n / 1e6, 1) == 31.0, n


def test_unet_base_channels_and_depth() -> None:
    model = create_model("unet", num_classes=2, base_channels=8, depth=3)
    assert model.encoder.channels == [8, 16, 32, 64]
    assert model.encoder.reductions == [1, 2, 4, 8]


def test_duplicate_registration_raises() -> None:
    original = model_builder("unet")
    with pytest.raises((RuntimeError, ValueError), match="unet"):

        @register_model("unet")
        def unet(*, num_classes: int) -> nn.Module:  # pragma: no cover - never called
            return nn.Identity()

    assert model_builder("unet") is original


def test_unknown_model_name() -> None:
    with pytest.raises(PixelwiseError, match="'unetz'") as exc:
        create_model("unetz", num_classes=2)
    assert "unet" in str(exc.value).split("available")[1]


@pytest.mark.parametrize("name", MODELS)
def test_unknown_kwarg_lists_accepted_ones(name: str) -> None:
    with pytest.raises(PixelwiseError, match="bse_channels") as exc:
        create_model(name, num_classes=2, bse_channels=8)
    params = inspect.signature(model_builder(name)).parameters
    accepted = [k for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert "num_classes" in accepted
    for k in accepted:
        assert k in str(exc.value)


def test_none_kwargs_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    seen = {}

    @register_model("_probe")
    def _probe(*, num_classes: int, in_channels: int = 3, width: int = 5) -> nn.Module:
        seen.update(num_classes=num_classes, in_channels=in_channels, width=width)
        return nn.Conv2d(in_channels, num_classes, 1)

    create_model("_probe", num_classes=4, in_channels=None, width=None)
    assert seen == {"num_classes": 4, "in_channels": 3, "width": 5}
    model = create_model("unet", num_classes=2, base_channels=None, depth=None, norm=None)
    assert model.encoder.channels == [64, 128, 256, 512, 1024]
    assert "_probe" in list_models()
