"""``pixelwise annotate`` in a real browser: headless Chromium (Selenium) draws with the brush,
polygon, flood fill, eraser and smart brush, undoes and redoes, saves, reloads, and the mask file's
pixels are checked; two tabs editing one image get the conflict message; the model's pre-labels
and uncertainty appear.

Needs Chromium and its driver (Debian: ``apt-get install chromium chromium-driver``) and selenium;
skipped, saying what is missing, without them (CI installs them)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from helpers import colour_segmenter, serve_in_thread  # noqa: E402

from pixelwise.annotate.app import AnnotateSettings, create_annotate_app, superpixels  # noqa: E402
from pixelwise.annotate.store import LabelStore  # noqa: E402
from pixelwise.data.spec import load_dataset_spec  # noqa: E402

pytestmark = pytest.mark.slow

H, W = 60, 80


def _dataset(root: Path) -> Path:
    """Two 60×80 images (black with a red and a green block): ``a`` labelled, ``b`` not; index masks
    with 255 = unlabelled."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name in ("a", "b"):
        image = np.zeros((H, W, 3), np.uint8)
        image[5:25, 5:35] = (255, 0, 0)
        image[35:55, 45:75] = (0, 255, 0)
        Image.fromarray(image).save(root / "images" / f"{name}.png")
    Image.fromarray(np.full((H, W), 255, np.uint8)).save(root / "masks" / "a.png")
    spec = {
        "name": "blocks",
        "root": str(root),
        "classes": [
            {"name": "bg", "color": [0, 0, 255]},
            {"name": "red", "color": [255, 0, 0]},
            {"name": "green", "color": [0, 255, 0]},
        ],
        "mask": {"encoding": "index", "ignore_values": [255]},
        "splits": {"train": {"images": "images", "masks": "masks"}},
    }
    (root / "blocks.yaml").write_text(json.dumps(spec))
    return root / "blocks.yaml"


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, Path]]:
    model = getattr(request, "param", False)
    store = LabelStore(load_dataset_spec(_dataset(tmp_path / "data")), tmp_path / "labels")
    app = create_annotate_app(
        store, colour_segmenter() if model else None, AnnotateSettings(superpixels=40)
    )
    for url in serve_in_thread(app):
        yield url, tmp_path / "labels" / "images"


class Page:
    """The annotation page in one tab: waits, keys, and drawing at image coordinates."""

    def __init__(self, driver, url: str):  # noqa: ANN001
        from selenium.webdriver.support.ui import WebDriverWait

        self.d = driver
        self.wait = WebDriverWait(driver, 30)
        driver.get(url)
        self.wait.until(lambda d: self.js("return S.labels !== null && S.item !== null"))

    def js(self, script: str, *args):  # noqa: ANN002, ANN201
        return self.d.execute_script("const S = window.pixelwiseAnnotate; " + script, *args)

    def open(self, name: str) -> None:
        self.js(
            "const id = S.items.findIndex((it) => it.name === arguments[0]); openItem(id);", name
        )
        self.wait.until(lambda d: self.js("return S.name === arguments[0]", name))
        self.wait.until(lambda d: self.js("return S.labels !== null && S.w > 0"))
        time.sleep(0.2)

    def keys(self, *keys: str) -> None:
        from selenium.webdriver.common.action_chains import ActionChains

        self.js("document.getElementById('view').focus()")
        ActionChains(self.d).send_keys(*keys).perform()

    def ctrl(self, key: str, shift: bool = False) -> None:
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        self.js("document.getElementById('view').focus()")
        chain = ActionChains(self.d).key_down(Keys.CONTROL)
        if shift:
            chain = chain.key_down(Keys.SHIFT)
        chain = chain.send_keys(key)
        if shift:
            chain = chain.key_up(Keys.SHIFT)
        chain.key_up(Keys.CONTROL).perform()

    def _offset(self, x: float, y: float) -> tuple[int, int]:
        """Image pixel (x, y)'s centre as an offset from the canvas centre (Selenium's origin)."""
        z, px, py, cw, ch = self.js(
            "const r = document.getElementById('view').getBoundingClientRect();"
            "return [S.zoom, S.panX, S.panY, r.width, r.height];"
        )
        return round(px + (x + 0.5) * z - cw / 2), round(py + (y + 0.5) * z - ch / 2)

    def drag(self, points: list[tuple[float, float]]) -> None:
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By

        canvas = self.d.find_element(By.ID, "view")
        chain = ActionChains(self.d).move_to_element_with_offset(canvas, *self._offset(*points[0]))
        chain = chain.click_and_hold()
        for p in points[1:]:
            chain = chain.move_to_element_with_offset(canvas, *self._offset(*p))
        chain.release().perform()

    def click(self, x: float, y: float) -> None:
        self.drag([(x, y)])

    def labels(self) -> np.ndarray:
        flat = self.js("return Array.from(S.labels)")
        return np.array(flat, np.uint8).reshape(H, W)

    def saved(self) -> None:
        self.ctrl("s")
        self.wait.until(
            lambda d: self.js("return !S.dirty && !S.saving") and self.state() == "saved"
        )

    def state(self) -> str:
        return self.js("return document.getElementById('save-state').textContent")

    def errors(self) -> list[dict]:
        return [e for e in self.d.get_log("browser") if e["level"] == "SEVERE"]


def _disk(folder: Path, name: str) -> np.ndarray:
    return np.asarray(Image.open(folder / f"{name}.png"))


def test_draw_with_every_tool_save_reload_and_check_the_file(chrome, served) -> None:  # noqa: ANN001
    url, labels = served
    page = Page(chrome, url)
    page.open("images/a.png")
    assert (page.labels() == 255).all()
    # brush: class red (key 2), size 5, along row 10 from x=8 to x=30
    page.keys("b", "2")
    page.js("setSize(5)")
    page.drag([(8, 10), (20, 10), (30, 10)])
    # polygon: class green (key 3), a square (45..75) × (35..55), closed with Enter
    page.keys("p", "3")
    for x, y in [(45, 35), (74, 35), (74, 54), (45, 54)]:
        page.click(x, y)
    page.keys("\ue007")  # Enter
    # flood fill: class bg (key 1) on the unlabelled background
    page.keys("f", "1")
    page.click(2, 58)
    got = page.labels()
    assert got[10, 20] == 1 and got[10, 8] == 1 and got[10, 30] == 1
    assert got[45, 60] == 2 and got[36, 46] == 2
    assert got[58, 2] == 0 and (got != 255).all()  # the fill reached every unlabelled pixel
    # undo the fill, redo it
    page.ctrl("z")
    assert (page.labels()[58, 2], page.labels()[10, 20]) == (255, 1)
    page.ctrl("z", shift=True)
    assert page.labels()[58, 2] == 0
    # eraser: a dot at (60, 20)
    page.keys("e")
    page.js("setSize(3)")
    page.click(60, 20)
    assert page.labels()[20, 60] == 255
    page.saved()
    expected = page.labels()
    on_disk = _disk(labels, "a")
    np.testing.assert_array_equal(on_disk, expected)
    assert on_disk[10, 20] == 1 and on_disk[45, 60] == 2 and on_disk[58, 2] == 0
    assert on_disk[20, 60] == 255
    # a fresh page reads the same labels back
    page = Page(chrome, url)
    page.open("images/a.png")
    np.testing.assert_array_equal(page.labels(), on_disk)
    assert page.state() == "saved"
    history = page.js("return document.getElementById('history').textContent")
    assert "manual" in history
    assert page.errors() == []


def test_two_tabs_editing_one_image_get_a_conflict_not_a_silent_overwrite(chrome, served) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By

    url, labels = served
    first = Page(chrome, url)
    first.open("images/b.png")
    tab1 = chrome.current_window_handle
    chrome.switch_to.new_window("tab")
    second = Page(chrome, url)
    second.open("images/b.png")
    tab2 = chrome.current_window_handle
    # tab 2 labels everything green and saves
    second.keys("f", "3")
    second.click(1, 1)
    second.saved()
    theirs = _disk(labels, "b").copy()
    assert (theirs == 2).all()
    # tab 1, still at the version it opened, paints and its autosave is refused
    chrome.switch_to.window(tab1)
    first.keys("b", "2")
    first.drag([(10, 30), (40, 30)])
    first.wait.until(lambda d: d.find_element(By.ID, "conflict").is_displayed())
    text = chrome.find_element(By.ID, "conflict-text").text
    assert "changed since you opened it" in text and "b.png" in text
    assert "conflict" in first.state()
    np.testing.assert_array_equal(_disk(labels, "b"), theirs)  # nothing overwritten
    # keep mine, knowingly
    chrome.find_element(By.ID, "keep-mine").click()
    first.wait.until(lambda d: first.state() == "saved")
    mine = _disk(labels, "b")
    assert mine[30, 25] == 1 and mine[0, 0] == 255
    np.testing.assert_array_equal(mine, first.labels())
    chrome.switch_to.window(tab2)
    chrome.close()
    chrome.switch_to.window(tab1)


@pytest.mark.parametrize("served", [True], indirect=True)
def test_model_prelabel_uncertainty_and_smart_brush(chrome, served, tmp_path: Path) -> None:  # noqa: ANN001
    url, labels = served
    page = Page(chrome, url)
    # the model ranked the unlabelled image b first
    page.wait.until(
        lambda d: "1/1 ranked" in page.js("return document.getElementById('ranking').textContent")
    )
    page.open("images/b.png")
    page.keys("m")
    page.wait.until(lambda d: (page.labels() != 255).all())
    got = page.labels()
    assert got[10, 10] == 1 and got[45, 60] == 2 and got[30, 40] == 0  # red, green, black → bg
    page.keys("u")
    page.wait.until(lambda d: page.js("return S.heat !== null"))
    page.saved()
    log = page.js("return document.getElementById('history').textContent")
    assert "model" in log
    # smart brush on image a: one click labels the whole superpixel under it
    page.open("images/a.png")
    page.keys("s", "3")
    page.wait.until(lambda d: page.js("return S.superpixels !== null"))
    page.js("setSize(1)")
    page.click(15, 15)
    got = page.labels()
    image = np.asarray(Image.open(tmp_path / "data" / "images" / "a.png"))
    seg = superpixels(image, 40)
    region = seg == seg[15, 15]
    assert (got[region] == 2).all() and (got[~region] == 255).all()
    page.saved()
    np.testing.assert_array_equal(_disk(labels, "a"), got)
    page.d.save_screenshot(str(tmp_path / "annotate.png"))
    assert page.errors() == []
