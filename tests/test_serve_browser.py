"""The web page in a real browser: uvicorn serves a toy model on a free port, headless Chromium (driven
by Selenium) opens ``/``, chooses an image in the file input, and the overlay and the class list
appear — with and without a bearer token.

Needs Chromium and its driver (Debian: ``apt-get install chromium chromium-driver``) and
``pip install selenium``; skipped, saying what is missing, without them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from helpers import colour_segmenter, serve_in_thread  # noqa: E402

from pixelwise.serve import ServeSettings, create_app  # noqa: E402

pytestmark = pytest.mark.slow


def _serve(settings: ServeSettings) -> Iterator[str]:
    return serve_in_thread(create_app(colour_segmenter(), settings))


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
