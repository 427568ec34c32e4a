"""``ofa demo`` (issue #16 item 6) in a real headless Chromium: the page loads, an image is uploaded, a caption
and a drawn grounding box come back. Screenshots are saved next to the test's temp files."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from ofa.errors import OFAError

gradio = pytest.importorskip("gradio")

from ofa.apps.demo import split_options  # noqa: E402  (needs gradio)

# counts the result image's pixels of draw_prediction's red (the input image is blue)
RED_PIXELS_JS = """() => {
  const img = document.querySelector('#ofa-result img');
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const ctx = canvas.getContext('2d'); ctx.drawImage(img, 0, 0);
  const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let red = 0;
  for (let i = 0; i < data.length; i += 4) if (data[i] > 200 && data[i + 1] < 80 && data[i + 2] < 80) red++;
  return red;
}"""


def test_options_go_to_every_task_or_to_the_one_named() -> None:
    split = split_options({"image_size": 64, "refcoco.max_image_size": 96, "caption.max_len": 6})
    assert split["caption"] == {"image_size": 64, "max_len": 6}
    assert split["refcoco"] == {"image_size": 64, "max_image_size": 96}
    assert split["vqa_gen"] == {"image_size": 64}
    with pytest.raises(OFAError, match="'sst2.x' names task 'sst2'"):
        split_options({"sst2.x": 1})


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory, small_model: Any, tok: Any) -> Iterator[str]:
    root = tmp_path_factory.mktemp("demo")
    small_model.save_pretrained(root / "ck")
    tok.save_pretrained(root / "ck")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(root / "demo.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "ofa.apps.cli", "demo", "--checkpoint", str(root / "ck"),
                             "--port", str(port), "-o", "image_size=64", "-o", "caption.max_len=6",
                             "-o", "refcoco.max_image_size=64"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, f"the demo exited with {proc.returncode}: see {root / 'demo.log'}"
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the demo page did not come up in 180 s"
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.mark.slow
def test_upload_caption_and_grounding_in_a_real_browser(demo_url: str, tmp_path: Path,
                                                        pil_image: Callable[..., Any]) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no Chromium on PATH (apt-get install -y chromium)")
    from PIL import Image

    image = tmp_path / "upload.png"
    Image.new("RGB", (160, 96), (10, 120, 200)).save(image)
    answer = "#ofa-answer textarea"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(demo_url, wait_until="networkidle")
            assert page.title() == "OFA demo"
            page.locator("#ofa-image input[type=file]").set_input_files(str(image))
            page.locator("#ofa-image img").wait_for(timeout=30_000)  # the upload is shown
            page.locator("#ofa-run").click()
            page.wait_for_function(f"() => document.querySelector('{answer}').value.length > 0", timeout=120_000)
            caption = page.locator(answer).input_value()
            assert caption.strip()
            page.screenshot(path=str(tmp_path / "caption.png"), full_page=True)

            page.get_by_label("Grounding").check()
            page.locator("#ofa-text textarea").fill("the blue square")
            page.locator("#ofa-run").click()
            page.wait_for_function(f"() => document.querySelector('{answer}').value.startsWith('box: [')",
                                   timeout=120_000)
            box = [float(v) for v in page.locator(answer).input_value()[len("box: ["):-1].split(",")]
            assert len(box) == 4 and all(0 <= v <= 160 for v in box[::2]) and all(0 <= v <= 96 for v in box[1::2])
            page.locator("#ofa-result img").wait_for(timeout=30_000)
            page.wait_for_function(f"() => ({RED_PIXELS_JS})() > 0", timeout=30_000)  # the box is drawn
            page.screenshot(path=str(tmp_path / "grounding.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "caption.png").stat().st_size > 0 and (tmp_path / "grounding.png").stat().st_size > 0
