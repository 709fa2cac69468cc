"""The screenshots of docs/annotate.md: ``pixelwise annotate`` on CamVid's test split with the
bundled model, in headless Chromium — one image pre-labelled by the model (replacing CamVid's
labels) and corrected with a brush stroke (docs/annotate.png), then the prediction's uncertainty
heat map with the labels hidden (docs/annotate_uncertainty.png).

    python docs/examples/annotate_screenshot.py

Needs ../shared/data/camvid, the serve extra, selenium, chromium and chromedriver. Labels are
written to a temporary folder, never into the dataset.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from pixelwise.annotate.app import AnnotateSettings, create_annotate_app
from pixelwise.annotate.store import LabelStore
from pixelwise.data.spec import load_dataset_spec
from pixelwise.engine import Segmenter

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "test/Seq05VD_f02370.png"


def main() -> None:
    spec = load_dataset_spec(ROOT / "configs/data/camvid.yaml")
    labels = Path(tempfile.mkdtemp(prefix="pixelwise-annotate-"))
    store = LabelStore(spec, labels, splits=["test"])
    seg = Segmenter.from_checkpoint("camvid", device="cpu")
    app = create_annotate_app(store, seg, AnnotateSettings(rank=False))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1500,820"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        driver.get(f"http://127.0.0.1:{sock.getsockname()[1]}/")
        wait = WebDriverWait(driver, 60)
        js = "const S = window.pixelwiseAnnotate; "
        wait.until(lambda d: d.execute_script(js + "return S.item !== null"))
        driver.execute_script(
            js + "openItem(S.items.findIndex((it) => it.name === arguments[0]))", IMAGE
        )
        wait.until(lambda d: d.execute_script(js + "return S.name === arguments[0]", IMAGE))
        canvas = driver.find_element(By.ID, "view")
        driver.execute_script("document.getElementById('view').focus()")
        driver.find_element(By.ID, "replace-all").click()  # the model's labels, not CamVid's
        driver.execute_script("document.getElementById('view').focus()")
        ActionChains(driver).send_keys("m").perform()  # pre-label with the model
        wait.until(lambda d: "pre-labelled" in d.find_element(By.ID, "status").text)
        # a correction: the Pavement class (key 5) brushed along the kerb
        ActionChains(driver).send_keys("b", "5").perform()
        driver.execute_script("setSize(14)")
        z, px, py, w, h = driver.execute_script(
            js + "const r = document.getElementById('view').getBoundingClientRect();"
            "return [S.zoom, S.panX, S.panY, r.width, r.height];"
        )

        def at(x: float, y: float) -> tuple[int, int]:
            return round(px + x * z - w / 2), round(py + y * z - h / 2)

        chain = ActionChains(driver).move_to_element_with_offset(canvas, *at(20, 300))
        chain = chain.click_and_hold()
        for x, y in [(60, 290), (110, 280)]:
            chain = chain.move_to_element_with_offset(canvas, *at(x, y))
        chain.release().perform()
        wait.until(lambda d: d.find_element(By.ID, "save-state").text == "saved")
        driver.save_screenshot(str(ROOT / "docs/annotate.png"))
        ActionChains(driver).send_keys("o", "u").perform()  # labels hidden, uncertainty shown
        wait.until(lambda d: d.execute_script(js + "return S.heat !== null"))
        time.sleep(0.3)
        driver.save_screenshot(str(ROOT / "docs/annotate_uncertainty.png"))
        print("wrote docs/annotate.png and docs/annotate_uncertainty.png")
    finally:
        driver.quit()
        server.should_exit = True
        shutil.rmtree(labels, ignore_errors=True)


if __name__ == "__main__":
    main()
