"""Every registered model: forward/backward, any input size, gradients, output strides, state-dict and
checkpoint round trips, overfitting one batch; the architectures' defining details; parameter counts
against torchvision; and the registry's contract (duplicates, unknown or ``None`` arguments).

The suite runs each architecture on a tiny timm encoder (``test_resnet``, 0.4M parameters) so that it
stays fast on a CPU; the paper configurations (VGG-16, ResNet-101, ...) are built once in a slow test
and measured on the ``meta`` device, where building and running a model costs no memory or compute.
"""

from __future__ import annotations

import inspect
import json

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import pixelwise
from pixelwise import registry
from pixelwise.engine.checkpoint import ModelMeta, build_model
from pixelwise.errors import PixelwiseError
from pixelwise.layers import BilinearConvTranspose2d, L2Norm
from pixelwise.registry import create_model, list_models, model_builder, register_model

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS = list_models()
NUM_CLASSES = 3
CANON = [
    "fcn32s",
    "fcn16s",
    "fcn8s",
    "unet",
    "unet_encoder",
    "pspnet",
    "deeplabv1",
    "deeplabv2",
    "deeplabv3",
    "deeplabv3plus",
    "parsenet",
]
TINY = "test_resnet" if timm.is_model("test_resnet") else "resnet18"

# small settings for whichever of these arguments a builder accepts
_SMALL = {"base_channels": 8, "pretrained": False, "encoder": TINY}


def _accepts(name: str, arg: str) -> bool:
    return arg in inspect.signature(model_builder(name)).parameters


def _small_kwargs(name: str, **overrides) -> dict:
    params = inspect.signature(model_builder(name)).parameters
    kw = {k: v for k, v in _SMALL.items() if k in params}
    return {"num_classes": NUM_CLASSES, **kw, **overrides}


def _small(name: str, seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, **_small_kwargs(name, **overrides))


def _loss_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy against random labels over every head (main and auxiliary), and the logits.

    Not ``logits.square()``: FCN's zero-initialised score layers would give it a zero gradient."""
    n, _, h, w = x.shape
    y = torch.randint(0, NUM_CLASSES, (n, h, w), generator=torch.Generator().manual_seed(0))
    if getattr(model, "aux_weight", 0.0) > 0:
        out = model(x, return_aux=True)
        return F.cross_entropy(out["out"], y) + F.cross_entropy(out["aux"], y), out["out"]
    out = model(x)
    return F.cross_entropy(out, y), out


def test_registry_lists_every_architecture() -> None:
    assert sorted(CANON) == MODELS
    assert MODELS == sorted(MODELS)
    assert pixelwise.list_models() == MODELS


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(("n", "h", "w"), [(1, 97, 131), (2, 33, 47), (2, 64, 64)])
def test_forward_backward_any_size(name: str, n: int, h: int, w: int) -> None:
    # batch size 1 in training mode included: image-pooling branches must not need a batch
    model = _small(name).train()
    x = torch.randn(n, 3, h, w)
    loss, out = _loss_and_logits(model, x)
    assert out.shape == (n, NUM_CLASSES, h, w)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    loss.backward()
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
        if name.startswith("fcn"):  # zero-initialised score layers: make the outputs differ
            for p in a.decoder.parameters():
                p.add_(0.1)
        assert not torch.equal(a(x), b(x))
        missing, unexpected = b.load_state_dict(a.state_dict())
        assert not missing and not unexpected
        assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("name", [m for m in MODELS if _accepts(m, "output_stride")])
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_output_stride_gives_the_expected_feature_sizes(name: str, output_stride: int) -> None:
    model = _small(name, output_stride=output_stride).eval()
    enc = model.encoder
    assert max(enc.reductions) == enc.reductions[-1] == output_stride
    assert enc.reductions == sorted(enc.reductions)
    h, w = 64, 96
    with torch.no_grad():
        feats = enc(torch.randn(1, 3, h, w))
        assert [f.shape[1] for f in feats] == enc.channels
        assert [tuple(f.shape[-2:]) for f in feats] == [(h // r, w // r) for r in enc.reductions]
        assert model(torch.randn(1, 3, 37, 45)).shape == (1, NUM_CLASSES, 37, 45)


@pytest.mark.parametrize("name", MODELS)
def test_plain_logits_in_train_and_eval_aux_only_on_request(name: str) -> None:
    model = _small(name)
    x = torch.randn(2, 3, 32, 32)
    for mode in (True, False):
        model.train(mode)
        out = model(x)
        assert isinstance(out, torch.Tensor) and out.shape == (2, NUM_CLASSES, 32, 32)
    if getattr(model, "aux_weight", 0.0) > 0:
        out = model(x, return_aux=True)
        assert set(out) == {"out", "aux"}
        assert out["aux"].shape == out["out"].shape


def test_pspnet_aux_head_and_weight() -> None:
    model = _small("pspnet")
    assert model.aux_weight == pytest.approx(0.4) and model.aux_head is not None
    assert model.aux_feature == -2  # the stage before the last (res4 in the paper)
    off = _small("pspnet", aux_weight=0.0)
    assert off.aux_head is None and off.aux_weight == 0.0
    assert sum(p.numel() for p in off.parameters()) < sum(p.numel() for p in model.parameters())
    assert set(off(torch.randn(1, 3, 32, 32), return_aux=True)) == {"out"}


@pytest.mark.parametrize("name", MODELS)
def test_builders_are_keyword_only_with_json_defaults(name: str) -> None:
    params = inspect.signature(model_builder(name)).parameters
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values())
    assert "num_classes" in params and params["in_channels"].default == 3
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    # JSON turns tuples into lists: the builders must accept what a checkpoint gives back
    revived = json.loads(json.dumps(defaults))
    kw = {**revived, **_small_kwargs(name)}
    model = create_model(name, **kw).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 20, 28)).shape == (1, NUM_CLASSES, 20, 28)


def test_checkpoint_rebuild_does_not_need_encoder_weights() -> None:
    kwargs = {"encoder": TINY, "encoder_weights": "/nonexistent/imagenet.pth", "output_stride": 16}
    meta = ModelMeta(
        arch="deeplabv3",
        num_classes=NUM_CLASSES,
        in_channels=3,
        class_names=["a", "b", "c"],
        colors=[[0, 0, 0], [1, 1, 1], [2, 2, 2]],
        mean=[0.5] * 3,
        std=[0.5] * 3,
        model_kwargs=kwargs,
    )
    trained = _small("deeplabv3", output_stride=16).eval()
    rebuilt = build_model(meta, trained.state_dict()).eval()
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), trained(x))
    with pytest.raises(PixelwiseError, match="nonexistent"):
        build_model(meta)  # a fresh model does use encoder_weights


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_match_torchvision() -> None:
    """DeepLab v3 and FCN on ResNet-50 (output stride 8, 21 classes, no aux) vs torchvision."""
    import torchvision.models.segmentation as tvs

    with torch.device("meta"):
        tv_deeplab = tvs.deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=21)
        tv_fcn = tvs.fcn_resnet50(weights=None, weights_backbone=None, num_classes=21)
        # torchvision's DeepLabHead has one 3×3 conv after the ASPP, the paper none
        ours_deeplab = create_model(
            "deeplabv3", num_classes=21, encoder="resnet50", output_stride=8, head_convs=1
        )
        paper_deeplab = create_model("deeplabv3", num_classes=21, encoder="resnet50")
        ours_fcn = {
            name: create_model(name, num_classes=21, encoder="resnet50", output_stride=8)
            for name in ("fcn32s", "fcn16s", "fcn8s")
        }
    assert ours_deeplab.decoder.aspp.branches[1][0].dilation == (12, 12)  # 12/24/36 at stride 8
    assert _n_params(ours_deeplab) == pytest.approx(_n_params(tv_deeplab), rel=0.01)
    assert _n_params(paper_deeplab) == _n_params(ours_deeplab) - (256 * 256 * 9 + 2 * 256)
    for model in ours_fcn.values():
        assert _n_params(model) == pytest.approx(_n_params(tv_fcn), rel=0.01)


def test_paper_configurations_have_the_papers_sizes() -> None:
    with torch.device("meta"):
        fcn8s = create_model("fcn8s", num_classes=21)
        v1 = create_model("deeplabv1", num_classes=21)
        unet = create_model("unet", num_classes=2)
    # FCN-8s (VGG-16, fc6/fc7 4096): 134M; DeepLab-LargeFOV (fc6 3×3×1024, dilation 12): 20.5M
    assert _n_params(fcn8s) / 1e6 == pytest.approx(134.3, abs=0.1)
    assert _n_params(v1) / 1e6 == pytest.approx(20.5, abs=0.05)
    assert v1.encoder.fc6.dilation == (12, 12) and v1.encoder.reductions[-1] == 8
    assert round(_n_params(unet) / 1e6, 1) == 31.0


def test_fcn_score_fusion_and_bilinear_upsampling() -> None:
    m32, m16, m8 = (_small(n, output_stride=32) for n in ("fcn32s", "fcn16s", "fcn8s"))
    assert (len(m32.decoder.skip_scores), len(m16.decoder.skip_scores)) == (0, 1)
    assert len(m8.decoder.skip_scores) == 2
    assert m8.decoder.skip_index == [3, 2]  # pool4-like then pool3-like features
    assert m8.decoder.final_up.factor == 8 and m32.decoder.final_up.factor == 32
    for conv in [m8.decoder.score, *m8.decoder.skip_scores]:
        assert not conv.weight.any()  # zero-initialised, as in the paper
    # a bilinear-initialised transposed conv is bilinear interpolation away from the border
    up = BilinearConvTranspose2d(2, 8)
    x = torch.randn(1, 2, 5, 6)
    ref = F.interpolate(x, scale_factor=8, mode="bilinear", align_corners=False)
    with torch.no_grad():
        assert torch.allclose(up(x)[..., 8:-8, 8:-8], ref[..., 8:-8, 8:-8], atol=1e-5)
    frozen = _small("fcn8s", learn_upsampling=False)
    assert not any(p.requires_grad for p in frozen.decoder.final_up.parameters())
    with torch.device("meta"):
        vgg = create_model("fcn32s", num_classes=21)
    assert isinstance(vgg.decoder.head, nn.Identity)  # VGG-16's fc6/fc7 are the head
    assert vgg.decoder.score.in_channels == 4096


def test_deeplab_rates_follow_the_output_stride() -> None:
    def rates(model: nn.Module) -> list[int]:
        return [b[0].dilation[0] for b in model.decoder.aspp.branches[1:4]]

    assert rates(_small("deeplabv3", output_stride=16)) == [6, 12, 18]
    assert rates(_small("deeplabv3", output_stride=8)) == [12, 24, 36]
    assert rates(_small("deeplabv3", rates=[2, 4, 6])) == [2, 4, 6]
    v2 = _small("deeplabv2")
    assert [c.dilation[0] for c in v2.decoder.aspp.branches] == [6, 12, 18, 24]
    assert all(c.out_channels == NUM_CLASSES for c in v2.decoder.aspp.branches)
    plus = _small("deeplabv3plus", separable=True)
    assert plus.decoder.reduce[0].out_channels == 48
    assert plus.encoder.reductions[plus.decoder.low_level_index] == 4
    assert plus.decoder.aspp.branches[1][0][0].groups > 1  # depthwise
    pool = [b for b in plus.decoder.aspp.branches if b.__class__.__name__ == "ImagePooling"]
    assert len(pool) == 1


def test_multi_grid_reaches_the_encoder() -> None:
    with torch.device("meta"):
        model = create_model("deeplabv3", num_classes=2, encoder="resnet50", multi_grid=[1, 2, 4])
    rates = [block.conv2.dilation[0] for block in model.encoder.model.layer4]
    assert rates == [2, 4, 8]  # output stride 16: rate 2 × (1, 2, 4)


def test_parsenet_context_and_l2norm() -> None:
    norm = L2Norm(4, scale=10.0)
    y = norm(torch.randn(2, 4, 3, 5))
    assert torch.allclose(y.norm(dim=1), torch.full((2, 3, 5), 10.0), atol=1e-4)
    model = _small("parsenet").eval()
    c = model.encoder.channels[-1]
    assert model.head.in_channels == 2 * c
    with torch.no_grad():
        out = model.decoder([torch.randn(1, c, 4, 6)])
    # the context half is the same vector at every location ("unpooling")
    assert torch.allclose(out[:, c:, 0, 0], out[:, c:, 3, 5])


def test_pspnet_pyramid() -> None:
    model = _small("pspnet")
    pools = [s[0].output_size for s in model.decoder.ppm.stages]
    assert pools == [1, 2, 3, 6]
    c = model.encoder.channels[-1]
    assert model.decoder.ppm.out_channels == c + 4 * (c // 4)
    assert model.encoder.output_stride == 8


@pytest.mark.parametrize(
    ("name", "kwargs", "needle"),
    [
        ("deeplabv3", {"encoder": "resnet_nope"}, "resnet_nope"),
        ("pspnet", {"output_stride": 12}, "12"),
        ("deeplabv3", {"multi_grid": [1, 2, 4], "encoder": "mobilenetv3_large_100"}, "layer4"),
        ("deeplabv3", {"multi_grid": [1, 2, 4]}, "multi_grid"),
        ("deeplabv3plus", {"low_level_stride": 3}, "low_level_stride 3"),
        ("pspnet", {"bins": []}, "bins"),
        ("unet_encoder", {"decoder_channels": [8, 8]}, "decoder_channels"),
        ("deeplabv3", {"head_convs": -1}, "head_convs"),
        ("deeplabv2", {"rates": [0, 6]}, "rates"),
        ("fcn8s", {"encoder_weights": "imagenet", "encoder": "mobilenetv3_large_100"}, "mobilenet"),
    ],
)
def test_bad_arguments_raise_one_clear_line(name: str, kwargs: dict, needle: str) -> None:
    with pytest.raises(PixelwiseError) as exc:
        create_model(name, **{**_small_kwargs(name), **kwargs})
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_unet_defaults_are_the_original_unet() -> None:
    model = create_model("unet", num_classes=2)
    assert model.encoder.channels == [64, 128, 256, 512, 1024]
    n = sum(p.numel() for p in model.parameters())
    assert round(n / 1e6, 1) == 31.0, n


def test_unet_base_channels_and_depth() -> None:
    model = create_model("unet", num_classes=2, base_channels=8, depth=3)
    assert model.encoder.channels == [8, 16, 32, 64]
    assert model.encoder.reductions == [1, 2, 4, 8]


def test_unet_encoder_uses_every_stage() -> None:
    model = _small("unet_encoder")
    assert len(model.decoder.blocks) == len(model.encoder.channels)  # 4 skips + stride 2 → 1
    with torch.device("meta"):
        vgg = create_model("unet_encoder", num_classes=2, encoder="vgg16_bn")
    assert len(vgg.decoder.blocks) == 5  # features at strides 1..32: 5 skips, no extra block


def test_complexity_is_measured() -> None:
    from pixelwise.engine.complexity import measure, model_complexity

    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert measure(conv, 3, (16, 16)) == (8 * 3 * 9, 2 * 8 * 3 * 9 * 16 * 16)
    small = model_complexity("deeplabv1", size=64, num_classes=NUM_CLASSES, encoder=TINY)
    large = model_complexity("deeplabv1", size=128, num_classes=NUM_CLASSES, encoder=TINY)
    assert large.flops == pytest.approx(4 * small.flops, rel=0.02)
    assert small.output_stride == 8 and small.params == _n_params(_small("deeplabv1"))


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


def _toy_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 64×64 images of three coloured regions (with noise) and their masks."""
    g = torch.Generator().manual_seed(0)
    y = torch.zeros(2, 64, 64, dtype=torch.long)
    y[0, :32, 32:] = 1
    y[0, 32:, :32] = 2
    y[1, :, 32:] = 1
    y[1, :32, :32] = 2
    colours = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    x = colours[y].permute(0, 3, 1, 2) + 0.3 * torch.randn(2, 3, 64, 64, generator=g)
    return x, y


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_overfits_one_batch(name: str) -> None:
    model = _small(name).train()
    x, y = _toy_batch()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(100):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-5:]) < losses[0] / 10, (losses[0], losses[-5:])


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_paper_configuration_runs(name: str) -> None:
    """The defaults (VGG-16, ResNet-50/101, ... with random weights) on a small odd-sized input."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 50, 70))
    assert out.shape == (1, NUM_CLASSES, 50, 70) and torch.isfinite(out).all()


@pytest.mark.slow
def test_models_command_lists_every_architecture(capsys: pytest.CaptureFixture[str]) -> None:
    from pixelwise.cli import main

    main(["models", "--size", "64", "--no-encoders"])
    out = capsys.readouterr().out
    for name in MODELS:
        assert name in out
    assert "GFLOPs" in out


@pytest.mark.parametrize("name", [m for m in MODELS if m != "unet"])
def test_camvid_recipe_loads_and_builds(name: str) -> None:
    """configs/camvid_<arch>.yaml: loads, shares budget and resolution, and its model builds."""
    from pathlib import Path

    from pixelwise.config import load_config

    configs = Path(__file__).resolve().parents[1] / "configs"
    cfg = load_config(configs / f"camvid_{name}.yaml")
    ref = load_config(configs / "camvid_deeplabv3.yaml")
    assert cfg.model.name == name
    assert cfg.augment == ref.augment and cfg.train == ref.train and cfg.optim == ref.optim
    assert cfg.model.params["encoder"] == ref.model.params["encoder"]
    params = {k: v for k, v in cfg.model.params.items() if k != "encoder_weights"}
    with torch.device("meta"):
        model = create_model(name, num_classes=11, **params)
    assert model.encoder.output_stride == params["output_stride"]


@pytest.mark.slow
def test_training_adds_the_aux_loss_and_checkpoints_rebuild(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two steps of PSPNet training: the engine asks for the auxiliary logits and weights their loss;
    the checkpoint rebuilds without the encoder-weights file it was initialised from."""
    import numpy as np
    from PIL import Image

    import pixelwise as pw
    from pixelwise.config import RunConfig

    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    for i in range(4):
        mask = np.zeros((32, 32), np.uint8)
        mask[:, 16:] = 1
        img = (rng.random((32, 32, 3)) * 60 + mask[..., None] * 80).astype(np.uint8)
        Image.fromarray(img).save(tmp_path / "data" / "images" / f"im{i}.png")
        Image.fromarray(mask).save(tmp_path / "data" / "masks" / f"im{i}.png")
    torch.manual_seed(0)
    weights = tmp_path / "encoder.pth"
    torch.save(timm.create_model(TINY, pretrained=False).state_dict(), weights)

    calls = []
    real_forward = pixelwise.models.base.SegmentationModel.forward

    def spy(self, x, *, return_aux=False):  # noqa: ANN001, ANN202
        calls.append(return_aux)
        return real_forward(self, x, return_aux=return_aux)

    monkeypatch.setattr(pixelwise.models.base.SegmentationModel, "forward", spy)
    cfg = RunConfig(
        data={"dataset": str(tmp_path / "data"), "train_split": "all", "val_split": "all"},
        model={
            "name": "pspnet",
            "params": {"encoder": TINY, "encoder_weights": str(weights), "output_stride": 8},
        },
        augment={"crop_size": [32, 32], "scale": [1.0, 1.0]},
        train={"epochs": 1, "batch_size": 2, "num_workers": 0, "amp": "off", "max_steps": 2},
    )
    pw.train(cfg, tmp_path / "run", progress=False)
    assert True in calls  # training asked for the auxiliary logits
    weights.unlink()  # the checkpoint must not need the file any more
    seg = pw.load(tmp_path / "run" / "best.ckpt", device="cpu")
    assert seg.predict(np.zeros((20, 24, 3), np.uint8)).shape == (20, 24)


@pytest.mark.parametrize("name", MODELS)
def test_one_output_channel(name: str) -> None:
    """Sigmoid (binary) models have a single logit channel."""
    model = _small(name, num_classes=1).train()
    out = model(torch.randn(2, 3, 33, 35))
    assert out.shape == (2, 1, 33, 35)
    out.mean().backward()


def test_deeplabv3plus_decoder_options_build_smp_s_shape() -> None:
    """The paper's decoder by default; one conv after the ASPP and one after the concatenation, with
    Xception-style separable convs (no norm between depthwise and pointwise), on request."""
    from pixelwise.layers import SeparableConvNormAct

    paper = create_model("deeplabv3plus", num_classes=3, encoder=TINY, separable=True)
    smp_like = create_model(
        "deeplabv3plus",
        num_classes=3,
        encoder=TINY,
        separable=True,
        separable_style="xception",
        decoder_convs=1,
        aspp_head_convs=1,
    )
    assert len(paper.decoder.fuse) == 2 and len(paper.decoder.aspp_head) == 0
    assert len(smp_like.decoder.fuse) == 1 and len(smp_like.decoder.aspp_head) == 1
    sep = [m for m in smp_like.modules() if isinstance(m, SeparableConvNormAct)]
    assert sep and all(
        isinstance(m[0][1], nn.Identity)
        and m[0][0].bias is None
        and isinstance(m[1][1], nn.BatchNorm2d)
        for m in sep
    )
    tf = [m for m in paper.modules() if isinstance(m, SeparableConvNormAct)]
    assert all(isinstance(m[0][1], nn.BatchNorm2d) for m in tf)
    x = torch.randn(1, 3, 45, 61)
    assert smp_like.eval()(x).shape == (1, 3, 45, 61)
    with pytest.raises(PixelwiseError, match="separable style"):
        create_model(
            "deeplabv3plus", num_classes=3, encoder=TINY, separable=True, separable_style="x"
        )
