"""Shared fixtures: the real-data location, and writers for tiny synthetic datasets.

Tests build their own images and masks in ``tmp_path`` (PNG/JPEG via Pillow); no binary fixture
files are committed. Tests that need the real datasets in ``../shared/data`` skip, with a reason,
without them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CONFIGS = ROOT / "configs"


@pytest.fixture
def chrome() -> Iterator[object]:
    """A headless Chromium driven by Selenium (browser tests), or skip saying what is missing."""
    from helpers import browser_paths

    binary, driver_path = browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a module of small CPU convolutions: on a 2-core machine that is
    shared with other jobs, more threads only contend. The previous setting is restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def require_data() -> Callable[[str], Path]:
    """``require_data("camvid")`` returns ``DATA / "camvid"`` or skips the test with the reason."""

    def _require(name: str) -> Path:
        path = DATA / name
        if not path.exists():
            pytest.skip(f"real data {path} is not present (expected ../shared/data/{name})")
        return path

    return _require


class Synth:
    """Writes small synthetic images, masks, dataset layouts and YAML files under one root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._rng = np.random.default_rng(0)

    def path(self, rel: str | Path) -> Path:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def image(self, h: int, w: int, channels: int = 3) -> np.ndarray:
        """A random uint8 image, H×W×3 (or H×W for one channel)."""
        shape = (h, w, 3) if channels == 3 else (h, w)
        return self._rng.integers(0, 256, shape, dtype=np.uint8)

    def png(
        self, rel: str | Path, array: np.ndarray | Image.Image, mode: str | None = None
    ) -> Path:
        """Write ``array`` as a PNG (``mode`` as for ``Image.fromarray``)."""
        p = self.path(rel)
        im = array if isinstance(array, Image.Image) else Image.fromarray(array, mode)
        im.save(p)
        return p

    def palette_png(
        self, rel: str | Path, indices: np.ndarray, colors: list[tuple[int, int, int]]
    ) -> Path:
        """A mode ``P`` PNG holding ``indices`` with ``colors`` as its first palette entries."""
        im = Image.fromarray(indices.astype(np.uint8), "P")
        pal = [v for c in colors for v in c]
        im.putpalette(pal + [0] * (768 - len(pal)))
        return self.png(rel, im)

    def yaml(self, rel: str | Path, obj: Any) -> Path:
        p = self.path(rel)
        p.write_text(yaml.safe_dump(obj, sort_keys=False), encoding="utf-8")
        return p

    def text(self, rel: str | Path, text: str) -> Path:
        p = self.path(rel)
        p.write_text(text, encoding="utf-8")
        return p

    def paired(
        self,
        masks: Mapping[str, np.ndarray],
        *,
        folder: str = "",
        images: str = "images",
        mask_dir: str = "masks",
        mask_suffix: str = "",
        image_channels: int = 3,
    ) -> Path:
        """``folder/images/<stem>.png`` (random, same size as its mask) and
        ``folder/masks/<stem><suffix>.png`` for every mask; returns ``root / folder``."""
        base = self.root / folder
        for stem, mask in masks.items():
            self.png(base / images / f"{stem}.png", self.image(*mask.shape[:2], image_channels))
            self.png(base / mask_dir / f"{stem}{mask_suffix}.png", mask)
        return base


@pytest.fixture
def synth(tmp_path: Path) -> Synth:
    """A :class:`Synth` writing under ``tmp_path``."""
    return Synth(tmp_path)
