"""pixelwise against segmentation_models_pytorch (smp): forward and training-step time of the same
architectures, measured side by side in one run.

    python bench/speed_vs_smp.py                              # CUDA if available, else the CPU
    python bench/speed_vs_smp.py --device cpu --repeats 5 --precisions fp32
    python bench/speed_vs_smp.py --size 64 --repeats 1        # a smoke run on tiny inputs

Pairs (random initialisation, 11 classes, smp with ``encoder_weights=None``); pixelwise's model is set
up to match smp's, with smp's own defaults read from its signatures:

* DeepLab v3+ / ResNet-50 — smp ``DeepLabV3Plus(encoder_name="resnet50")``: output stride 16, ASPP rates
  12/24/36, separable ASPP, dropout 0.5, 256 channels; pixelwise ``deeplabv3plus`` with the same output
  stride, rates, dropout and width, and smp's decoder: one separable 3×3 conv after the ASPP
  (``aspp_head_convs=1``), one after the concatenation (``decoder_convs=1``; the paper has two), no
  norm inside the separable convs (``separable_style="xception"``). Left different: smp's image-pooling
  branch has batch norm, pixelwise's a bias (so it trains at batch size 1); smp upsamples with
  ``align_corners=True``.
* PSPNet / ResNet-50 — smp's default ``PSPNet("resnet50")`` stops the encoder after its stride-8 stage
  (``encoder_depth=3``, 512 channels), which pixelwise cannot build (its encoders always run every
  stage). So smp is given pixelwise's encoder instead: ``PSPNet("resnet50", encoder_depth=5,
  output_stride=8, upsampling=8)``, the paper's dilated ResNet-50; pixelwise ``pspnet`` at output
  stride 8 with smp's 512 channels and dropout 0.2 and no auxiliary head (smp has none). Two pixelwise
  rows: ``pspnet`` fuses the pyramid with a 3×3 conv (the paper; 1.6× smp's FLOPs), ``pspnet_1x1``
  with smp's 1×1 (``fuse_kernel=1``; the same network). Left different: smp's classifier is 3×3,
  pixelwise's 1×1. smp's default model is listed (parameters, GFLOPs) but not timed.
* U-Net / ResNet-18 — smp ``Unet("resnet18")``; pixelwise ``unet_encoder`` on ``resnet18`` with smp's
  decoder channels 256/128/64/32/16 and smp's nearest upsampling (``upsample="nearest"``; pixelwise's
  default is bilinear). Left different: smp's classifier is 3×3, pixelwise's 1×1.

Both sides use the same ResNet topology (smp: torchvision's; pixelwise: timm's ``features_only``).
Parameters and GFLOPs (2 per multiply-add, convolutions and matrix products) of both are printed,
measured by ``pixelwise.engine.complexity.measure`` at the forward size.

What is timed: *forward* — eval mode, ``torch.no_grad()``, a batch of ``--batch`` 3×384×480 images
(CamVid's 360×480 padded to a multiple of 32, which smp requires; pixelwise pads internally and then
has nothing to pad); *memory format* ``--formats``: both models and the inputs in contiguous (NCHW)
or ``channels_last`` (NHWC) layout alike; *train step* — train mode, forward, cross-entropy (in float32), backward, AdamW
step, a batch of ``--batch`` 256×256 crops. In float32 and under bfloat16 autocast. For each pair
and precision: ``--warmup`` untimed calls of each, then ``--repeats`` timed calls interleaved
(pixelwise, smp, pixelwise, smp, ...), each ended by a device synchronisation; the table shows the
median of each and the ratio pixelwise / smp (≤ 1.0: pixelwise is no slower). Threads are torch's
default unless ``--threads`` is given; cuDNN autotuning is left off (torch's default).
"""

from __future__ import annotations

import argparse
import inspect
import logging
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from timing import interleaved_medians
from torch import nn

__all__ = ["PAIRS", "Pair", "main"]

NUM_CLASSES = 11

log = logging.getLogger("speed_vs_smp")


def _smp() -> Any:
    try:
        import segmentation_models_pytorch as smp
    except ImportError:
        raise SystemExit(
            "segmentation_models_pytorch is not installed: pip install 'pixelwise[bench]'"
        ) from None
    return smp


def _default(cls: type, name: str) -> Any:
    """The default of argument ``name`` of smp model class ``cls``."""
    p = inspect.signature(cls).parameters.get(name)
    if p is None:
        smp = _smp()
        raise SystemExit(
            f"smp {smp.__version__}: {cls.__name__} has no argument {name!r}; this benchmark was "
            "written against segmentation-models-pytorch 0.6.0"
        )
    return p.default


@dataclass(frozen=True)
class Pair:
    """One architecture built by both libraries, with a line saying how each is configured."""

    label: str
    pixelwise: Callable[[], nn.Module]
    smp: Callable[[], nn.Module]
    pixelwise_config: str
    smp_config: str


def _deeplabv3plus() -> Pair:
    smp = _smp()
    cls = smp.DeepLabV3Plus
    os_, rates = (
        _default(cls, "encoder_output_stride"),
        tuple(_default(cls, "decoder_atrous_rates")),
    )
    sep, drop = _default(cls, "decoder_aspp_separable"), _default(cls, "decoder_aspp_dropout")
    width = _default(cls, "decoder_channels")
    kw = dict(
        encoder="resnet50",
        output_stride=os_,
        rates=rates,
        separable=sep,
        separable_style="xception",
        decoder_convs=1,
        aspp_head_convs=1,
        dropout=drop,
        aspp_channels=width,
    )
    return Pair(
        "DeepLab v3+ / ResNet-50",
        lambda: _pixelwise("deeplabv3plus", **kw),
        lambda: cls(encoder_name="resnet50", encoder_weights=None, classes=NUM_CLASSES),
        "deeplabv3plus(" + ", ".join(f"{k}={v!r}" for k, v in kw.items()) + ")",
        f'DeepLabV3Plus("resnet50")  # output stride {os_}, rates {rates}, separable {sep}, '
        f"dropout {drop}, {width} channels",
    )


def _pspnet(fuse_kernel: int = 3) -> Pair:
    smp = _smp()
    cls = smp.PSPNet
    width, drop = _default(cls, "psp_out_channels"), _default(cls, "psp_dropout")
    kw = dict(
        encoder="resnet50",
        output_stride=8,
        decoder_channels=width,
        fuse_kernel=fuse_kernel,
        dropout=drop,
        aux_weight=0.0,
    )
    return Pair(
        f"PSPNet / ResNet-50, {fuse_kernel}×{fuse_kernel} fusion",
        lambda: _pixelwise("pspnet", **kw),
        lambda: cls(
            encoder_name="resnet50",
            encoder_weights=None,
            classes=NUM_CLASSES,
            encoder_depth=5,
            upsampling=8,
            output_stride=8,
        ),
        "pspnet(" + ", ".join(f"{k}={v!r}" for k, v in kw.items()) + ")",
        f'PSPNet("resnet50", encoder_depth=5, output_stride=8, upsampling=8)  # {width} channels, '
        f"dropout {drop}",
    )


def _unet() -> Pair:
    smp = _smp()
    cls = smp.Unet
    channels = tuple(_default(cls, "decoder_channels"))
    kw = dict(
        encoder="resnet18",
        decoder_channels=channels,
        upsample=_default(cls, "decoder_interpolation"),
    )
    return Pair(
        "U-Net / ResNet-18",
        lambda: _pixelwise("unet_encoder", **kw),
        lambda: cls(encoder_name="resnet18", encoder_weights=None, classes=NUM_CLASSES),
        "unet_encoder(" + ", ".join(f"{k}={v!r}" for k, v in kw.items()) + ")",
        f'Unet("resnet18")  # decoder channels {channels}, '
        f"{_default(cls, 'decoder_interpolation')} upsampling",
    )


PAIRS: dict[str, Callable[[], Pair]] = {
    "deeplabv3plus": _deeplabv3plus,
    "pspnet": _pspnet,
    "pspnet_1x1": partial(_pspnet, 1),
    "unet": _unet,
}

FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def _pixelwise(name: str, **kwargs: Any) -> nn.Module:
    import pixelwise as pw

    return pw.create_model(name, num_classes=NUM_CLASSES, **kwargs)


# ---- timing -----------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _forward(model: nn.Module, x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    with torch.no_grad(), torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
        out = model(x)
    _sync(x.device)
    return out


def _train_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    dtype: torch.dtype | None,
) -> torch.Tensor:
    with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
        out = model(x)
    loss = F.cross_entropy(out.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    _sync(x.device)
    return out


def _time_pair(
    pair: Pair,
    args: argparse.Namespace,
    xf: torch.Tensor,
    xt: torch.Tensor,
    yt: torch.Tensor,
    *,
    flops_ratio: float,
) -> list[str]:
    """Time both models of ``pair`` in every memory format and precision; one table row each."""
    rows = []
    for fmt in args.formats:
        rows += _time_format(pair, args, fmt, xf, xt, yt, flops_ratio=flops_ratio)
    return rows


def _time_format(
    pair: Pair,
    args: argparse.Namespace,
    fmt: str,
    xf: torch.Tensor,
    xt: torch.Tensor,
    yt: torch.Tensor,
    *,
    flops_ratio: float,
) -> list[str]:
    mf = FORMATS[fmt]
    torch.manual_seed(0)
    ours = pair.pixelwise().to(xf.device, memory_format=mf)
    theirs = pair.smp().to(xf.device, memory_format=mf)
    xf, xt = xf.contiguous(memory_format=mf), xt.contiguous(memory_format=mf)
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    opt_theirs = torch.optim.AdamW(theirs.parameters(), lr=1e-4)
    rows = []
    for prec in args.precisions:
        dtype = PRECISIONS[prec]
        log.info("%s, %s, %s", pair.label, fmt, prec)
        ours.eval(), theirs.eval()
        for model in (ours, theirs):  # both give N×classes×H×W logits
            out = _forward(model, xf, dtype)
            if out.shape != (xf.shape[0], NUM_CLASSES, *xf.shape[-2:]):
                raise RuntimeError(f"{pair.label}: output of shape {tuple(out.shape)}")
        fwd = interleaved_medians(
            partial(_forward, ours, xf, dtype),
            partial(_forward, theirs, xf, dtype),
            warmup=args.warmup,
            repeats=args.repeats,
        )
        ours.train(), theirs.train()
        step = interleaved_medians(
            partial(_train_step, ours, opt_ours, xt, yt, dtype),
            partial(_train_step, theirs, opt_theirs, xt, yt, dtype),
            warmup=args.warmup,
            repeats=args.repeats,
        )
        rows.append(
            f"| {pair.label} | {fmt.replace('_', ' ')} | {prec} | {flops_ratio:.2f} | {_ms(fwd[0])} | {_ms(fwd[1])} | "
            f"**{fwd[0] / fwd[1]:.2f}** | {_ms(step[0])} | {_ms(step[1])} | "
            f"**{step[0] / step[1]:.2f}** |"
        )
    return rows


# ---- measuring the configurations -------------------------------------------------------------------


def _cost(build: Callable[[], nn.Module], size: tuple[int, int]) -> tuple[int, float]:
    """``(parameters, GFLOPs)`` of one image at ``size``, measured on the meta device."""
    from pixelwise.engine.complexity import measure

    with torch.device("meta"):
        model = build()
    params, flops = measure(model, 3, size)
    return params, flops / 1e9


def _smp_default_psp(size: tuple[int, int]) -> str:
    smp = _smp()
    params, gflops = _cost(
        lambda: smp.PSPNet(encoder_name="resnet50", encoder_weights=None, classes=NUM_CLASSES),
        size,
    )
    return (
        f'smp\'s default `PSPNet("resnet50")` (encoder depth {_default(smp.PSPNet, "encoder_depth")}: '
        f"ResNet-50 up to its stride-8 stage, no dilation) — {params / 1e6:.2f} M parameters "
        f"(the unused stages included), {gflops:.1f} GFLOPs — has no pixelwise counterpart and is "
        "not timed."
    )


# ---- command line -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--device", help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)"
    )
    ap.add_argument("--batch", type=int, default=4, help="images per batch (forward and train)")
    ap.add_argument("--forward-size", type=int, nargs=2, default=[384, 480], metavar=("H", "W"))
    ap.add_argument("--train-size", type=int, nargs=2, default=[256, 256], metavar=("H", "W"))
    ap.add_argument("--size", type=int, help="square H = W for both forward and train (smoke runs)")
    ap.add_argument("--repeats", type=int, default=10, help="timed calls of each model")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls of each model first")
    ap.add_argument("--models", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    ap.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    ap.add_argument(
        "--formats",
        nargs="+",
        default=list(FORMATS),
        choices=list(FORMATS),
        help="memory formats (both models and inputs converted alike)",
    )
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own)")
    args = ap.parse_args(argv)
    if args.size is not None:
        args.forward_size = args.train_size = [args.size, args.size]
    for name in ("forward_size", "train_size"):
        if any(s <= 0 or s % 32 for s in getattr(args, name)):
            ap.error(
                f"--{name.replace('_', '-')} {getattr(args, name)}: smp needs sides that are "
                "positive multiples of 32"
            )
    if args.repeats < 1 or args.warmup < 0 or args.batch < 1:
        ap.error("--repeats and --batch must be at least 1, --warmup at least 0")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def _machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    text = f"{cpu}, {torch.get_num_threads()} CPU threads"
    if device.type == "cuda":
        text = f"{torch.cuda.get_device_name(device)}; host {text}"
    return text


def _ms(s: float) -> str:
    return f"{1000 * s:.1f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    smp = _smp()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    fsize, tsize = tuple(args.forward_size), tuple(args.train_size)
    pairs = [PAIRS[name]() for name in args.models]

    gen = torch.Generator().manual_seed(0)
    xf = torch.randn(args.batch, 3, *fsize, generator=gen).to(device)
    xt = torch.randn(args.batch, 3, *tsize, generator=gen).to(device)
    yt = torch.randint(0, NUM_CLASSES, (args.batch, *tsize), generator=gen).to(device)

    config_rows, rows = [], []
    for pair in pairs:
        (pp, pg), (sp, sg) = _cost(pair.pixelwise, fsize), _cost(pair.smp, fsize)
        config_rows.append(
            f"| {pair.label} | `{pair.pixelwise_config}` | {pp / 1e6:.2f} | {pg:.1f} "
            f"| `{pair.smp_config}` | {sp / 1e6:.2f} | {sg:.1f} |"
        )
        rows += _time_pair(pair, args, xf, xt, yt, flops_ratio=pg / sg)
        if device.type == "cuda":
            torch.cuda.empty_cache()

    import pixelwise

    n = args.batch
    print(
        "\n".join(
            [
                "# pixelwise vs segmentation_models_pytorch: speed",
                "",
                "    python bench/speed_vs_smp.py " + " ".join(args.argv),
                "",
                f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {_machine(device)}; "
                f"device {device}; torch {torch.__version__}, smp {smp.__version__}, "
                f"pixelwise {pixelwise.__version__}.",
                "",
                f"Forward: eval mode, `no_grad`, {n}×3×{fsize[0]}×{fsize[1]}. Train step: train mode, "
                f"forward + cross-entropy + backward + AdamW step, {n}×3×{tsize[0]}×{tsize[1]}. "
                f"Median of {args.repeats} calls of each, interleaved (pixelwise, smp, ...) after "
                f"{args.warmup} warm-up calls; memory format: both models and the inputs converted "
                "alike (`channels_last` is what `pixelwise train` uses by default); bf16 is `torch.autocast(dtype=torch.bfloat16)`. "
                "Ratio = pixelwise / smp: at most 1.00 means pixelwise is no slower. FLOPs ratio: "
                "the forward FLOPs of pixelwise's model over smp's (the configurations below); "
                "where it is not 1.00 the two compute different networks.",
                "",
                "| model | memory format | precision | FLOPs ratio | forward pixelwise ms | forward smp ms | forward ratio "
                "| train pixelwise ms | train smp ms | train ratio |",
                "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
                *rows,
                "",
                f"Configurations (random initialisation, {NUM_CLASSES} classes; parameters, and "
                f"GFLOPs of one {fsize[0]}×{fsize[1]} image measured by "
                "`pixelwise.engine.complexity.measure`):",
                "",
                "| model | pixelwise | params (M) | GFLOPs | smp | params (M) | GFLOPs |",
                "| --- | --- | ---: | ---: | --- | ---: | ---: |",
                *config_rows,
                "",
                *(
                    [_smp_default_psp(fsize), ""]
                    if any(m.startswith("pspnet") for m in args.models)
                    else []
                ),
            ]
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
