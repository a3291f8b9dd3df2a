"""The web page in a real browser (headless Chromium via Selenium) against the demo model on its own
TorchServe: what a first-time user sees, images and videos end to end, and foreign hosts refused."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from deepfake_client import DeepfakeClient
from deepfake_client.web import WebConfig, create_server
from scripts.operations.archives import build_archive
from scripts.operations.torchserve import Ports, TorchServe
from tests.conftest import cli

TIER = "browser"


# --- a real browser ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_site(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, TorchServe]]:
    """The demo model on its own TorchServe, and the page on a free loopback port (waitress)."""
    from handler.settings import ModelSettings
    from scripts.operations.archives import settings_from_files, sidecar_files

    root = tmp_path_factory.mktemp("web")
    weights = demo / "model" / "best_ResNet18.pth"
    settings = ModelSettings.from_mapping(settings_from_files(sidecar_files(weights)))
    build_archive(weights, settings, "deepfake", root / "store", precision="int8", calibration_images=None)
    ts = TorchServe(root / "rt", root / "store", ports=Ports.free())
    ts.start(timeout=300)
    site = create_server(WebConfig(client=ts.client_config()), host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=site.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{site.effective_port}", ts
    finally:
        site.close()
        ts.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "make browser installs chromium and chromium-driver (make test does)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,2200"):
        options.add_argument(argument)
    # chromium's own temporary folders (its profile, a singleton socket it leaves behind) go to the test's
    # temporary folder, not to a shared /tmp
    env = {**os.environ, "TMPDIR": str(tmp_path_factory.mktemp("chromium"))}
    session = webdriver.Chrome(options=options, service=Service(executable_path=driver, env=env))
    try:
        yield session
    finally:
        session.quit()


def test_the_page_in_headless_chromium(demo_site, browser, demo: Path, tmp_path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import WebDriverWait

    url, ts = demo_site
    browser.get(url)
    wait = WebDriverWait(browser, 180)
    wait.until(shown.text_to_be_present_in_element((By.ID, "server-status"), "Detector ready"))
    # an image: the original app's numbers, as the server computes them
    image = demo / "data" / "samples" / "fake.jpg"
    browser.find_element(By.ID, "file-input").send_keys(str(image))
    wait.until(shown.visibility_of_element_located((By.ID, "image-result")))
    expected = requests.post(f"{ts.inference_url}/predictions/deepfake", data=image.read_bytes(), timeout=60,
                             headers={"Authorization": f"Bearer {ts.keys()['inference']}",
                                      "Content-Type": "image/jpeg"}).json()  # fmt: skip
    assert browser.find_element(By.ID, "image-label").text == expected["label"] == "Fake"
    assert browser.find_element(By.ID, "image-fake").text == f"{expected['fake_probability']:.4f}"
    assert (
        browser.find_element(By.ID, "image-logits").text
        == "[" + ", ".join(f"{x:.4f}" for x in expected["logits"]) + "]"
    )
    assert f"{expected['adjusted_confidence']:.4f}" in browser.find_element(By.ID, "image-adjusted").text
    # the explanation overlay, toggled on the image
    preview = browser.find_element(By.ID, "image-preview")
    plain = preview.get_attribute("src")
    browser.find_element(By.ID, "image-overlay").click()
    assert preview.get_attribute("src").startswith("data:image/jpeg;base64,") and preview.get_attribute("src") != plain
    assert "Heatmap of the fake score (grad-cam on layer3)" in browser.find_element(By.ID, "image-overlay-caption").text
    browser.save_screenshot(str(tmp_path / "web_image.png"))
    browser.find_element(By.ID, "image-overlay").click()
    assert preview.get_attribute("src") == plain
    # the demo video: progress, then the summary, the timeline with its segments shaded, the frame table
    video = demo / "data" / "demo.mp4"
    browser.execute_script(  # record every progress line the page shows, however fast it goes by
        "window.progressLines = [];"
        "new MutationObserver(() => window.progressLines.push(document.getElementById('progress-text').textContent))"
        ".observe(document.getElementById('progress-text'), {childList: true, characterData: true, subtree: true});"
    )
    browser.find_element(By.ID, "file-input").send_keys(str(video))
    wait.until(shown.visibility_of_element_located((By.ID, "video-result")))
    progress = browser.execute_script("return window.progressLines;")
    assert any(line.startswith("Analysing demo.mp4: ") and line.endswith(" / 30 frames") for line in progress), progress
    with DeepfakeClient(ts.client_config()) as client:
        analysis = client.analyze_video(video)
    rows = browser.find_elements(By.CSS_SELECTOR, "#frame-table tbody tr")
    assert len(rows) == len(analysis.frames) == 30  # 15 s at 2 fps
    assert browser.find_element(By.ID, "video-verdict").text == analysis.summary.verdict
    assert browser.find_element(By.ID, "video-mean").text == f"{analysis.summary.mean_fake_probability:.4f}"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#timeline circle.point")) == 30
    assert len(browser.find_elements(By.CSS_SELECTOR, "#timeline rect.segment")) == len(analysis.segments) >= 1
    first = rows[0].find_elements(By.TAG_NAME, "td")
    assert first[2].text == "0.00 s" and first[3].text == f"{analysis.frames[0].prediction.fake_probability:.4f}"
    assert first[1].find_element(By.TAG_NAME, "img").get_attribute("src").startswith("data:image/jpeg;base64,")
    segments = browser.find_element(By.ID, "video-segments").text
    assert all(f"{s.start:.1f}–{s.end:.1f} s" in segments for s in analysis.segments)
    # the most suspicious frames, each with its overlay toggle
    figures = browser.find_elements(By.CSS_SELECTOR, "#explained-frames figure")
    top = sorted((f for f in analysis.frames if f.prediction), key=lambda f: -f.prediction.fake_probability)[:3]
    assert [f.text.split(" s,")[0] for f in figures] == [f"{frame.time:.2f}" for frame in top]
    frame_image = figures[0].find_element(By.TAG_NAME, "img")
    before = frame_image.get_attribute("src")
    figures[0].find_element(By.CSS_SELECTOR, "input.frame-overlay").click()
    assert frame_image.get_attribute("src") != before
    browser.save_screenshot(str(tmp_path / "web_video.png"))
    # a bad file: a message, not a crash
    notes = tmp_path / "notes.mp4"
    notes.write_text("just some notes\n" * 20)
    browser.find_element(By.ID, "file-input").send_keys(str(notes))
    wait.until(shown.visibility_of_element_located((By.ID, "message")))
    assert "not an image" in browser.find_element(By.ID, "message").text


def test_the_page_says_what_a_first_time_user_needs(demo_site, browser, demo: Path, tmp_path: Path):
    """The demo model's notice, the formats, a sentence under the verdict, the size checked before an upload,
    every error as a sentence, no face as an answer, a cancel button while a video runs, the JSON to keep."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = demo_site
    browser.get(url)
    wait = WebDriverWait(browser, 180)
    wait.until(shown.text_to_be_present_in_element((By.ID, "server-status"), "Detector ready"))
    assert (
        "demo model (synthetic scenes): not a detector for real faces"
        in browser.find_element(By.ID, "model-notice").text
    )
    assert "FLV" in browser.find_element(By.ID, "video-formats").text
    printed = cli(demo_site[1], "image", str(demo / "data" / "samples" / "real.jpg")).stdout  # and the CLI says it too
    assert "Model:               demo model (synthetic scenes): not a detector for real faces" in printed
    # the model card, in the header and in deepfake-detect models: the demo's says what it detects
    limits = browser.find_element(By.ID, "card-known-limits").get_attribute("textContent")
    assert "not real face swaps" in limits
    assert "synthetic" in browser.find_element(By.ID, "card-trained-on").get_attribute("textContent")
    held_out = browser.find_element(By.ID, "card-held-out").get_attribute("textContent")
    assert held_out.startswith("accuracy 0.9"), held_out
    models = cli(demo_site[1], "models").stdout
    assert "known limits: it detects the synthetic traces make_demo_data plants, not real face swaps" in models
    # an image: the verdict explained in a sentence, the JSON to download
    browser.find_element(By.ID, "file-input").send_keys(str(demo / "data" / "samples" / "real.jpg"))
    wait.until(shown.visibility_of_element_located((By.ID, "image-result")))
    assert "the model's estimate that this image is manipulated" in browser.find_element(By.ID, "image-explain").text
    assert browser.find_element(By.CSS_SELECTOR, "#image-result button.download").is_displayed()
    # over the upload limit: refused in the browser, nothing sent
    big = tmp_path / "big.mp4"
    with open(big, "wb") as sparse:
        sparse.truncate(201 * 1024 * 1024)
    browser.find_element(By.ID, "file-input").send_keys(str(big))
    wait.until(shown.text_to_be_present_in_element((By.ID, "message"), "over the upload limit of 200 MB"))
    assert not browser.find_element(By.ID, "progress-box").is_displayed()
    # a plain-text error from any layer (waitress's own 413, a proxy's 502) reads as a sentence
    said = browser.execute_async_script(
        "const done = arguments[0];"
        "readAnswer(new Response('Request Entity Too Large', {status: 413})).then((a) => done(a.data.message));"
    )
    assert said == "The server answered HTTP 413: the file is larger than the server accepts."
    # no face: an answer with the file's name, not an error box
    browser.execute_script(
        "renderImage({kind: 'image', name: 'holiday.png', no_face: true, message: 'no face found', model_notice: ''},"
        " new File([''], 'holiday.png'));"
    )
    assert browser.find_element(By.ID, "image-label").text == "No face"
    assert "No face was found in holiday.png" in browser.find_element(By.ID, "image-explain").text
    # face-crop analyses: one line per person (what renderVideo does with a result's tracks)
    browser.execute_script(
        "renderPeople([{person: 1, spans: [[0, 4], [6.5, 12]], frames: 19, mean_fake_probability: 0.2,"
        " peak_fake_probability: 0.97, segments: [{start: 8, end: 10}]},"
        " {person: 2, spans: [[0, 12]], frames: 24, mean_fake_probability: 0.1, peak_fake_probability: 0.3,"
        " segments: []}]);"
    )
    people = [li.get_attribute("textContent") for li in browser.find_elements(By.CSS_SELECTOR, "#video-people li")]
    assert people == [
        "Person 1: in view 0.0–4.0 s, 6.5–12.0 s (19 frames), mean fake probability 0.20, peak 0.97; "
        "manipulated 8.0–10.0 s",
        "Person 2: in view 0.0–12.0 s (24 frames), mean fake probability 0.10, peak 0.30; no manipulated segment",
    ]
    # a video: a cancel button while it runs
    browser.execute_script(
        "window.cancelShown = false; new MutationObserver(() => { if (!document.getElementById('cancel').hidden)"
        " window.cancelShown = true; }).observe(document.getElementById('cancel'), {attributes: true});"
    )
    browser.find_element(By.ID, "file-input").send_keys(str(demo / "data" / "demo.mp4"))
    wait.until(shown.visibility_of_element_located((By.ID, "video-result")))
    assert browser.execute_script("return window.cancelShown;")
    assert "analysed frames were called fake" in browser.find_element(By.ID, "video-explain").text
    # the partly manipulated demo video: amber, with the manipulated span in words
    verdict = browser.find_element(By.ID, "video-verdict")
    assert verdict.text == "manipulated segments found" and verdict.get_attribute("data-label") == verdict.text
    assert browser.find_element(By.ID, "video-explain").text.startswith("5.0-10.0 s manipulated, peak ")


def test_the_real_page_refuses_foreign_hosts_and_cross_site_posts(demo_site, browser, demo: Path):
    """After the browser test: a DNS-rebound Host and another site's form post get 4xx from the real server,
    while the page itself (loaded in Chromium under its Content-Security-Policy) kept working."""
    url, _ = demo_site
    image = (demo / "data" / "samples" / "real.jpg").read_bytes()
    files = {"file": ("real.jpg", image, "image/jpeg")}
    own = requests.post(f"{url}/api/analyze", files=files, timeout=60, headers={"Origin": url})
    assert own.status_code == 200 and own.json()["kind"] == "image"
    rebound = requests.post(f"{url}/api/analyze", files=files, timeout=60,
                            headers={"Host": "evil.example", "Origin": "http://evil.example"})  # fmt: skip
    assert rebound.status_code == 421 and rebound.json()["error"] == "bad_host"
    foreign = requests.post(f"{url}/api/analyze", files=files, timeout=60, headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403 and foreign.json()["error"] == "cross_site"
    page = requests.get(url, timeout=10)
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    # Chromium itself: a form on a page of another origin posting to the page is refused
    browser.get("data:text/html,<form id=f method=post enctype=multipart/form-data action='" + url +
                "/api/analyze'><input type=hidden name=x value=1></form><script>f.submit()</script>")  # fmt: skip
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 30).until(lambda b: "cross_site" in b.page_source or "bad_host" in b.page_source)
    assert "cross_site" in browser.page_source
