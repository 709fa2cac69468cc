"""The web page in a real browser: uvicorn serves a toy model on a free port, headless Chromium (driven
by Selenium) opens ``/``, chooses an image in the file input, and the overlay and the class list
appear — with and without a bearer token.

Needs Chromium and its driver (Debian: ``apt-get install chromium chromium-driver``) and
``pip install selenium``; skipped, saying what is missing, without them."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from pixelwise.engine import Segmenter  # noqa: E402
from pixelwise.engine.checkpoint import ModelMeta  # noqa: E402
from pixelwise.serve import ServeSettings, create_app  # noqa: E402

pytestmark = pytest.mark.slow

CHROMIUMS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _browser() -> tuple[str, str]:
    """(browser binary, chromedriver) or skip with what is missing."""
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


def _segmenter() -> Segmenter:
    """Class by colour: black → bg, red → red, green → green."""
    conv = nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.tensor([0.5, 0.0, 0.0]))
        conv.weight[1, 0] = 1.0
        conv.weight[2, 1] = 1.0
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


def _serve(settings: ServeSettings) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(_segmenter(), settings), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    end = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < end, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def chrome() -> Iterator[object]:
    binary, driver_path = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.parametrize("token", [None, "s3cret"], ids=["open", "token"])
def test_page_segments_an_uploaded_image(chrome: object, tmp_path: Path, token: str | None) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    image = np.zeros((60, 80, 3), np.uint8)
    image[:30, :40] = (255, 0, 0)
    image[40:, 50:] = (0, 255, 0)
    path = tmp_path / "scene.png"
    Image.fromarray(image).save(path)

    driver = chrome
    wait = WebDriverWait(driver, 30)
    for url in _serve(ServeSettings(model_name="toy", token=token)):
        driver.get(url)
        wait.until(lambda d: "toy" in d.find_element(By.ID, "model").text or token)
        if token:
            wait.until(lambda d: d.find_element(By.ID, "token-row").is_displayed())
            field = driver.find_element(By.ID, "token")
            field.send_keys(token)
            driver.execute_script("arguments[0].dispatchEvent(new Event('change'))", field)
            wait.until(lambda d: "toy" in d.find_element(By.ID, "model").text)
        driver.find_element(By.ID, "file").send_keys(str(path))
        rows = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#classes tbody tr"))
        table = [[c.text for c in r.find_elements(By.TAG_NAME, "td")[1:]] for r in rows]
        assert table == [  # largest first: 4800 pixels, red 30×40, green 20×30
            ["bg", "3,000", "62.5 %", "1"],
            ["red", "1,200", "25.0 %", "1"],
            ["green", "600", "12.5 %", "1"],
        ]
        size = driver.execute_script(
            "const m = document.getElementById('mask');"
            "return m.complete ? [m.naturalWidth, m.naturalHeight] : null;"
        )
        assert size == [80, 60]  # the class mask is laid over the image
        assert driver.find_element(By.ID, "mask").is_displayed()
        assert "80×60" in driver.find_element(By.ID, "status").text
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        if token:  # the first v1/models call is refused before the token is entered
            severe = [e for e in severe if "401" not in e["message"]]
        assert severe == []  # no script error, nothing blocked by the content security policy
