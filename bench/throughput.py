"""Images per second at CamVid size (360×480, batch 1) per architecture — eager float32, eager bfloat16
autocast and ONNX Runtime — and against segmentation_models_pytorch's and torchvision's same models,
measured in one run.

    python bench/throughput.py                       # everything, markdown on stdout
    python bench/throughput.py --parts recipes --archs fcn8s unet_encoder --repeats 3

*recipes* — every ``configs/camvid_<arch>.yaml`` model (EfficientNet-Lite0 encoder where the
architecture takes one; random initialisation, 11 classes) run as ``Segmenter`` runs it: eval,
``no_grad``, channels_last; eager float32, eager under ``torch.autocast(bfloat16)``, and the
``pixelwise export`` ONNX file through ONNX Runtime (CPU provider, its default threads).

*peers* — the same networks built by both libraries where a peer has them, timed alternately
(pixelwise, peer, pixelwise, ...), both in channels_last: smp's Unet / DeepLabV3 / DeepLabV3Plus /
PSPNet on timm's ``tf_efficientnet_lite0`` (``tu-`` encoders) against pixelwise set up like smp's
defaults, and torchvision's ``deeplabv3_resnet50`` / ``fcn_resnet50`` (output stride 8) against
pixelwise's DeepLab v3 (``head_convs=1``) and FCN-32s on a dilated ResNet-50. The FLOPs ratio says
how far each pair is from computing the same thing. Ratio = pixelwise images/s ÷ peer images/s
(≥ 1.00: pixelwise is no slower).

Times are medians of ``--repeats`` calls after ``--warmup`` calls.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from inference_bench import RECIPES, recipe_model
from timing import interleaved_medians, median_seconds, report_head
from torch import nn

NUM_CLASSES = 11
SIZE = (360, 480)


def _ips(fn: Callable[[], object], warmup: int, repeats: int) -> float:
    return 1.0 / median_seconds(fn, repeats, warmup)


def _eager(model: nn.Module, x: torch.Tensor, dtype: torch.dtype | None) -> Callable[[], object]:
    def run() -> object:
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            return model(x)

    return run


def _recipes(archs: list[str], warmup: int, repeats: int) -> list[str]:
    from pixelwise.engine.complexity import measure
    from pixelwise.engine.export import export_onnx
    from pixelwise.engine.onnx_model import load_onnx

    x = torch.randn(1, 3, *SIZE).contiguous(memory_format=torch.channels_last)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in archs:
            model, meta = recipe_model(arch)
            _, flops = measure(model, 3, SIZE)
            model = model.to(memory_format=torch.channels_last)
            fp32 = _ips(_eager(model, x, None), warmup, repeats)
            bf16 = _ips(_eager(model, x, torch.bfloat16), warmup, repeats)
            path = Path(tmp) / f"{arch}.onnx"
            export_onnx(model, meta, path)
            onnx_model, _ = load_onnx(path, device="cpu")
            xc = x.contiguous()
            ort = _ips(lambda: onnx_model(xc), warmup, repeats)  # noqa: B023
            best = max(fp32, bf16, ort)
            rows.append(
                f"| {arch} | {flops / 1e9:.1f} | {fp32:.1f} | {bf16:.1f} | {ort:.1f} | {best:.1f} |"
            )
            print(f"  {arch}: {fp32:.1f} / {bf16:.1f} / {ort:.1f} img/s", file=sys.stderr)
    return [
        "## Images per second per architecture (360×480, batch 1)",
        "",
        "| recipe | GFLOPs | eager fp32 | eager bf16 | ONNX Runtime | best |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
    ]


def _peer_pairs() -> list[tuple[str, Callable[[], nn.Module], Callable[[], nn.Module], str]]:
    import pixelwise as pw

    pairs = []
    try:
        import segmentation_models_pytorch as smp
    except ImportError:
        smp = None
    enc = "tf_efficientnet_lite0"
    if smp is not None:
        tu = f"tu-{enc}"
        kw = {"encoder_weights": None, "classes": NUM_CLASSES}
        pairs += [
            (
                "U-Net / Lite0 (smp)",
                lambda: pw.create_model(
                    "unet_encoder", num_classes=NUM_CLASSES, encoder=enc, upsample="nearest"
                ),
                lambda: smp.Unet(tu, **kw),
                "smp",
            ),
            (
                "DeepLab v3 / Lite0 (smp)",
                lambda: pw.create_model(
                    "deeplabv3",
                    num_classes=NUM_CLASSES,
                    encoder=enc,
                    output_stride=8,
                    rates=(12, 24, 36),
                    head_convs=1,
                ),
                lambda: smp.DeepLabV3(tu, **kw),
                "smp",
            ),
            (
                "DeepLab v3+ / Lite0 (smp)",
                lambda: pw.create_model(
                    "deeplabv3plus",
                    num_classes=NUM_CLASSES,
                    encoder=enc,
                    output_stride=16,
                    rates=(12, 24, 36),
                    separable=True,
                ),
                lambda: smp.DeepLabV3Plus(tu, **kw),
                "smp",
            ),
            (
                "PSPNet / Lite0 (smp, 1×1 fusion)",
                lambda: pw.create_model(
                    "pspnet",
                    num_classes=NUM_CLASSES,
                    encoder=enc,
                    output_stride=8,
                    fuse_kernel=1,
                    aux_weight=0.0,
                ),
                lambda: smp.PSPNet(tu, encoder_depth=5, upsampling=8, output_stride=8, **kw),
                "smp",
            ),
        ]
    import torchvision.models.segmentation as tvs

    pairs += [
        (
            "DeepLab v3 / ResNet-50 (torchvision)",
            lambda: pw.create_model(
                "deeplabv3",
                num_classes=NUM_CLASSES,
                encoder="resnet50",
                output_stride=8,
                head_convs=1,
            ),
            lambda: _tv(
                tvs.deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=NUM_CLASSES)
            ),
            "torchvision",
        ),
        (
            "FCN / ResNet-50 (torchvision)",
            lambda: pw.create_model(
                "fcn32s", num_classes=NUM_CLASSES, encoder="resnet50", output_stride=8
            ),
            lambda: _tv(
                tvs.fcn_resnet50(weights=None, weights_backbone=None, num_classes=NUM_CLASSES)
            ),
            "torchvision",
        ),
    ]
    return pairs


class _TV(nn.Module):
    """torchvision's segmentation models return a dict; time the ``out`` logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def _tv(model: nn.Module) -> nn.Module:
    return _TV(model)


def _peers(warmup: int, repeats: int) -> list[str]:
    from pixelwise.engine.complexity import measure

    x = torch.randn(1, 3, 352, 480).contiguous(memory_format=torch.channels_last)
    rows = []
    for label, ours_fn, theirs_fn, _ in _peer_pairs():
        torch.manual_seed(0)
        ours = ours_fn().eval().to(memory_format=torch.channels_last)
        theirs = theirs_fn().eval().to(memory_format=torch.channels_last)
        _, f_ours = measure(ours, 3, (352, 480))
        _, f_theirs = measure(theirs, 3, (352, 480))
        cells = []
        for dtype in (None, torch.bfloat16):
            ta, tb = interleaved_medians(
                _eager(ours, x, dtype), _eager(theirs, x, dtype), repeats=repeats, warmup=warmup
            )
            ips_a, ips_b = 1 / ta, 1 / tb
            cells += [f"{ips_a:.1f}", f"{ips_b:.1f}", f"**{ips_a / ips_b:.2f}**"]
        rows.append(f"| {label} | {f_ours / f_theirs:.2f} | " + " | ".join(cells) + " |")
        print(f"  {label}: done", file=sys.stderr)
    return [
        "## Against segmentation_models_pytorch and torchvision (352×480, batch 1, channels_last)",
        "",
        "352×480: smp needs multiples of 32. Ratio = pixelwise img/s ÷ peer img/s.",
        "",
        "| model | FLOPs ratio | fp32 pixelwise img/s | fp32 peer img/s | fp32 ratio | "
        "bf16 pixelwise img/s | bf16 peer img/s | bf16 ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--parts", nargs="+", default=["recipes", "peers"], choices=["recipes", "peers"]
    )
    ap.add_argument("--archs", nargs="+", default=RECIPES, choices=RECIPES)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    lines = report_head("Throughput", __file__, argv)
    if "recipes" in args.parts:
        lines += _recipes(args.archs, args.warmup, args.repeats)
    if "peers" in args.parts:
        lines += _peers(args.warmup, args.repeats)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
