"""Helpers shared by several test modules (tests/ is on sys.path under pytest)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def load_bench_module(name: str) -> ModuleType:
    """Import ``bench/<name>.py`` by path (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def study_dataset(root: Path) -> Path:
    """Four classes named like CamVid's (road, pole, sign, pedestrian), 16×16 index masks; 255 is
    unlabelled. Splits train (4 images), val and test (2 each). Returns the dataset YAML."""
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(8):
        mask = np.zeros((16, 16), np.uint8)
        mask[4:8, 2:4] = 1
        mask[2:4, 10:14] = 2
        mask[10:15, 8:11] = 3
        mask[0] = 255
        img = (rng.random((16, 16, 3)) * 40 + mask[..., None] % 255 * 50).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    (root / "data.yaml").write_text(
        "name: toy\nroot: .\nclasses: [{name: road}, {name: pole}, {name: sign}, {name: pedestrian}]\n"
        "mask: {encoding: index, ignore_index: 255}\nsplits:\n"
        "  train: {images: images, masks: masks, stems: ['0', '1', '2', '3']}\n"
        "  val: {images: images, masks: masks, stems: ['4', '5']}\n"
        "  test: {images: images, masks: masks, stems: ['6', '7']}\n"
    )
    return root / "data.yaml"


def toy_dataset(root: Path, n: int = 8, size: int = 32) -> Path:
    """A folder dataset of ``n`` RGB images with 3-class masks (images/, masks/) under ``root``."""
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        mask[:, size // 2 :] = 1
        mask[: size // 4] = 2
        img = (rng.random((size, size, 3)) * 60).astype(np.uint8) + (mask[..., None] * 80).astype(
            np.uint8
        )
        Image.fromarray(img).save(root / "images" / f"im{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"im{i}.png")
    return root


def segment_scope(headers: list[tuple[bytes, bytes]]) -> dict:
    """The ASGI scope of ``POST /v1/segment`` on the test server, with ``headers`` as given."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/segment",
        "raw_path": b"/v1/segment",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


COLORS = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]


def three_class_meta(arch: str = "unet", **kwargs):  # noqa: ANN003, ANN201
    """ModelMeta of a 3-class RGB model (bg, red, green in COLORS), mean 0.5 / std 0.25."""
    from pixelwise.engine.checkpoint import ModelMeta

    return ModelMeta(
        arch=arch,
        num_classes=3,
        in_channels=3,
        class_names=["bg", "red", "green"],
        colors=COLORS,
        mean=[0.5] * 3,
        std=[0.25] * 3,
        model_kwargs=kwargs,
    )


def pixel_segmenter():  # noqa: ANN201
    """A Segmenter of a seeded per-pixel model (a 1×1 convolution) with :func:`three_class_meta`."""
    import torch
    from torch import nn

    from pixelwise.engine.predictor import Segmenter

    torch.manual_seed(0)
    return Segmenter(nn.Conv2d(3, 3, 1).eval(), three_class_meta(), device="cpu")


def tiny_unet_checkpoint(folder: Path) -> Path:
    """``folder/tiny.ckpt``: a seeded 3-class U-Net (base 4, depth 2) with :func:`three_class_meta`."""
    import torch

    import pixelwise
    from pixelwise.engine.checkpoint import save_checkpoint

    kwargs = {"base_channels": 4, "depth": 2}
    torch.manual_seed(0)
    model = pixelwise.create_model("unet", num_classes=3, in_channels=3, **kwargs).eval()
    path = folder / "tiny.ckpt"
    save_checkpoint(
        path, {"meta": three_class_meta(**kwargs).to_dict(), "model": model.state_dict()}
    )
    return path


CHROMIUMS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def browser_paths() -> tuple[str, str]:
    """(browser binary, chromedriver) for the browser tests, or skip saying what is missing."""
    import shutil

    import pytest

    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("no browser test: selenium is not installed (pip install selenium)")
    binary = next((p for p in map(shutil.which, CHROMIUMS) if p), None)
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        missing = " and ".join(
            n for n, p in (("chromium", binary), ("chromedriver", driver)) if p is None
        )
        pytest.skip(
            f"no browser test: {missing} not found "
            "(Debian: apt-get install chromium chromium-driver)"
        )
    return binary, driver


def serve_in_thread(app):  # noqa: ANN001, ANN201 - an ASGI app; yields its URL
    """Run ``app`` with uvicorn on a free loopback port in a thread; a generator yielding
    ``http://127.0.0.1:<port>/`` once it accepts connections, stopping the server after."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    end = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > end:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def colour_model():  # noqa: ANN201 - an nn.Conv2d
    """Class by colour (with mean 0, std 1): black → bg, red → red, green → green (a 1×1 conv)."""
    import torch
    from torch import nn

    conv = nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.tensor([0.5, 0.0, 0.0]))
        conv.weight[1, 0] = 1.0
        conv.weight[2, 1] = 1.0
    return conv


def colour_segmenter():  # noqa: ANN201 - a Segmenter
    """A Segmenter of :func:`colour_model`: black → bg, red → red, green → green."""
    from pixelwise.engine import Segmenter
    from pixelwise.engine.checkpoint import ModelMeta

    conv = colour_model()
    meta = ModelMeta(
        arch="unet",
        num_classes=3,
        in_channels=3,
        class_names=["bg", "red", "green"],
        colors=[[0, 0, 0], [255, 0, 0], [0, 255, 0]],
        mean=[0.0] * 3,
        std=[1.0] * 3,
    )
    return Segmenter(conv, meta, device="cpu")


def run_cli(capsys, *args: str) -> tuple[int, str, str]:  # noqa: ANN001 - pytest's capsys
    """Run ``pixelwise ARGS`` in this process: (exit code, stdout, stderr)."""
    from pixelwise.cli import main

    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
