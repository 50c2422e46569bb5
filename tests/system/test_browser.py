"""Real-browser smoke test: the Streamlit app in headless Chromium (Selenium), on loopback only.

- Predict: upload a real film, wait for the label and the Grad-CAM overlay, then time a warm upload.
- Every page: load it, let it settle, and check there is no exception box and no traceback.
- Screenshots of the window go to test-artifacts/ (gitignored). With PARU_UPDATE_SCREENSHOTS=1 the README
  screenshots in docs/screenshots/ are rewritten too (full page, optimised PNGs; also kept in test-artifacts/).

Skips cleanly when Chromium, chromedriver, selenium or the shared data folder is missing.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
DEMO_RUN = PROJECT_ROOT / "models" / "demo-nih-cxr4"
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
DOCS_SCREENSHOTS = PROJECT_ROOT / "docs" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CLASS_NAMES = ("Normal", "Pneumonia", "Cardiomegaly", "Pneumothorax")
PAGES = {"home": "/", "predict": "/Predict", "evaluation": "/Evaluation", "review": "/Review",
         "training": "/Training"}
UPDATE_SCREENSHOTS = os.environ.get("PARU_UPDATE_SCREENSHOTS") == "1"
MAX_PNG_BYTES = 400 * 1024
# TensorFlow's C++ log lines and the notices around them, as the server's console would show them.
NATIVE_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ [\w.-]+:\d+\] |^WARNING: All log messages before absl|"
                         r"^INFO: Created TensorFlow Lite XNNPACK delegate|^To enable the following instructions")
COLD_TIMEOUT = 90.0
WARM_SANITY_SECONDS = 15.0


def _skip_reason() -> str | None:
    if not CHROMIUM.exists():
        return f"Chromium not found at {CHROMIUM}"
    if not CHROMEDRIVER.exists():
        return f"chromedriver not found at {CHROMEDRIVER}"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    if not SHARED_DATA.is_dir():
        return f"shared data folder not found at {SHARED_DATA}"
    return None


_REASON = _skip_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


def _films() -> list[Path]:
    """Two real films of different classes (prefer the 256 px samples)."""
    for root in (SHARED_DATA / "samples", SHARED_DATA / "nih-cxr4"):
        picks = []
        for name in CLASS_NAMES:
            files = sorted((root / name).glob("*.png")) if (root / name).is_dir() else []
            if files:
                picks.append(files[0])
        if len(picks) >= 2:
            return picks
    pytest.skip(f"no real films (<Class>/*.png) under {SHARED_DATA}/samples or nih-cxr4")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
    try:
        with opener.open(url, timeout=2) as response:
            return response.status == 200 and response.read().strip() == b"ok"
    except OSError:
        return False


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """`streamlit run streamlit_app.py` on a free loopback port, serving a copy of the shipped demo run (so the
    audit log of the uploads lands in a temporary folder); terminated (process group) afterwards."""
    models_dir = tmp_path_factory.mktemp("browser-models")
    shutil.copytree(DEMO_RUN, models_dir / DEMO_RUN.name)
    ARTIFACTS.mkdir(exist_ok=True)
    port = _free_port()
    log_path = ARTIFACTS / "browser_streamlit.log"
    log = open(log_path, "w")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PARU_MODELS_DIR": str(models_dir)}
    command = [sys.executable, "-m", "streamlit", "run", "streamlit_app.py",
               "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
               "--browser.gatherUsageStats", "false",
               # Other people may be editing pages while this runs: no reruns on file change.
               "--server.fileWatcherType", "none"]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while not _healthy(f"{base}/_stcore/health"):
            if process.poll() is not None:
                pytest.fail(f"streamlit exited with {process.returncode}; see {log_path}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit not healthy after 90 s; see {log_path}")
            time.sleep(0.5)
        yield base
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def driver(app_url):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="paru-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1400,1000", "--no-proxy-server", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    browser.set_page_load_timeout(60)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


# --- page helpers ---------------------------------------------------------------------------------------------

_STATE_JS = """
const app = document.querySelector('[data-testid="stApp"]');
const q = (s) => document.querySelectorAll(s).length;
return {
  script: app ? app.getAttribute('data-test-script-state') : null,
  connection: app ? app.getAttribute('data-test-connection-state') : null,
  spinners: q('[data-testid="stSpinner"]') + q('[data-testid="stStatusWidgetRunningIcon"]')
            + q('[data-testid="stStatusWidgetRunningManIcon"]'),
  skeletons: q('[data-testid="stSkeleton"]'),
  main: q('[data-testid="stMainBlockContainer"] [data-testid="stElementContainer"]'),
};
"""

_PREDICT_JS = """
const metrics = Array.from(document.querySelectorAll('[data-testid="stMetricValue"]')).map(e => e.innerText.trim());
const seen = new Set();
for (const img of document.querySelectorAll('[data-testid="stImage"] img, [data-testid="stImageContainer"] img')) {
  if (img.complete && img.naturalWidth > 0) seen.add(img);
}
const app = document.querySelector('[data-testid="stApp"]');
return {metrics: metrics, images: seen.size, script: app ? app.getAttribute('data-test-script-state') : null};
"""


def _wait_settled(browser, timeout: float = 60.0, quiet: float = 2.0) -> dict:
    """Wait until the script is not running, no spinner/skeleton shows and some content rendered, for `quiet` s."""
    deadline = time.monotonic() + timeout
    calm_since = None
    state = {}
    while time.monotonic() < deadline:
        state = browser.execute_script(_STATE_JS)
        calm = (state["script"] == "notRunning" and state["spinners"] == 0 and state["skeletons"] == 0
                and state["main"] > 0)
        if calm:
            calm_since = calm_since or time.monotonic()
            if time.monotonic() - calm_since >= quiet:
                return state
        else:
            calm_since = None
        time.sleep(0.2)
    pytest.fail(f"page {browser.current_url} did not settle in {timeout:.0f} s: {state}")


def _assert_no_error(browser, name: str) -> None:
    exceptions = browser.find_elements("css selector", '[data-testid="stException"]')
    text = browser.execute_script("return document.body.innerText")
    details = "\n---\n".join(e.text[:1500] for e in exceptions)
    assert not exceptions, f"{name}: {len(exceptions)} exception box(es) on the page:\n{details}"
    assert "Traceback" not in text, f"{name}: 'Traceback' on the page:\n{text[:3000]}"


def _wait_predictions(browser, count: int, timeout: float) -> dict:
    """Wait until `count` predicted labels and 2*count loaded images (film + overlay each) show."""
    deadline = time.monotonic() + timeout
    state = {}
    while time.monotonic() < deadline:
        state = browser.execute_script(_PREDICT_JS)
        if len(state["metrics"]) >= count and state["images"] >= 2 * count:
            return state
        if browser.find_elements("css selector", '[data-testid="stException"]'):
            _assert_no_error(browser, "predict")
        time.sleep(0.05)
    pytest.fail(f"no {count} prediction(s) with film + overlay after {timeout:.0f} s: {state}\n"
                f"{browser.execute_script('return document.body.innerText')[:2000]}")


def _upload(browser, film: Path) -> None:
    inputs = browser.find_elements("css selector", 'input[type="file"]')
    assert inputs, "no file input on the Predict page"
    # ChromeDriver appends to a `multiple` input's earlier files; empty it so only this film is sent.
    browser.execute_script("arguments[0].value = '';", inputs[0])
    inputs[0].send_keys(str(film.resolve()))


def _optimised_png(png: bytes) -> bytes:
    """Quantise (and if needed downscale) a screenshot until it is under MAX_PNG_BYTES."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    scale = 1.0
    while True:
        work = image if scale == 1.0 else image.resize(
            (round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        work.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            buffer, "PNG", optimize=True)
        if buffer.tell() <= MAX_PNG_BYTES or scale < 0.4:
            return buffer.getvalue()
        scale *= 0.85


def _emoji_font_installed() -> bool:
    try:
        fonts = subprocess.run(["fc-list"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "emoji" in fonts.lower()


def _screenshot(browser, name: str, docs: bool = False) -> None:
    """The window as it is, into test-artifacts/; for the README (docs and PARU_UPDATE_SCREENSHOTS=1) the
    full page: the viewport stretched to the content height (Streamlit scrolls inside stMain). Stretching
    re-lays out every chart and a tall capture is an image many times the window's, so it is done only where
    the full page is wanted."""
    ARTIFACTS.mkdir(exist_ok=True)
    if not (docs and UPDATE_SCREENSHOTS):
        shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
        (ARTIFACTS / f"browser_{name}.png").write_bytes(base64.b64decode(shot["data"]))
        return
    if not _emoji_font_installed():
        # Without a colour emoji font headless Chromium draws the titles' emoji as empty boxes.
        pytest.fail("no emoji font for the README screenshots: apt-get install fonts-noto-color-emoji (see .ci/run)")
    height = browser.execute_script("""
        const main = document.querySelector('[data-testid="stMain"]');
        const block = document.querySelector('[data-testid="stMainBlockContainer"]');
        return Math.max(document.documentElement.scrollHeight, main ? main.scrollHeight : 0,
                        block ? block.getBoundingClientRect().bottom + 40 : 0);""")
    height = int(min(max(height, 1000), 8000))
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 1400, "height": height, "deviceScaleFactor": 1, "mobile": False})
    try:
        time.sleep(1.5)  # charts re-layout to the new viewport
        # The viewport already covers the page; captureBeyondViewport=True would nudge Streamlit's sidebar
        # into its collapse transition (it shows up clipped), so capture the (tall) viewport as it is.
        shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    png = base64.b64decode(shot["data"])
    (ARTIFACTS / f"browser_{name}.png").write_bytes(png)
    DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (DOCS_SCREENSHOTS / f"{name}.png").write_bytes(_optimised_png(png))


# --- tests ----------------------------------------------------------------------------------------------------

def test_predict_upload_shows_label_and_overlay(driver, app_url):
    first, second = _films()[:2]
    driver.get(f"{app_url}/Predict")
    _wait_settled(driver)
    _assert_no_error(driver, "predict (empty)")

    started = time.monotonic()
    _upload(driver, first)
    state = _wait_predictions(driver, 1, COLD_TIMEOUT)
    cold = time.monotonic() - started
    label = state["metrics"][0]
    assert any(name in label for name in CLASS_NAMES), f"predicted label {label!r} is not a class name"
    _wait_settled(driver, timeout=30)
    _assert_no_error(driver, "predict (one film)")
    assert first.name in driver.execute_script("return document.body.innerText")
    # The probability chart has no plotly mode bar covering its bar labels.
    assert driver.execute_script(
        "return document.querySelectorAll('[data-testid=\"stPlotlyChart\"] .modebar-btn').length") == 0
    _screenshot(driver, "predict", docs=True)

    # Warm upload: the model is loaded; time from send_keys until the new label and overlay show.
    started = time.monotonic()
    _upload(driver, second)
    state = _wait_predictions(driver, 2, 60)
    warm = time.monotonic() - started
    assert len(state["metrics"]) == 2, f"expected 2 predictions after the second upload: {state['metrics']}"
    assert all(any(name in value for name in CLASS_NAMES) for value in state["metrics"]), state["metrics"]
    _wait_settled(driver, timeout=30)
    _assert_no_error(driver, "predict (two films)")
    assert second.name in driver.execute_script("return document.body.innerText")
    _screenshot(driver, "predict_two_films")

    timing = {"cold_first_upload_seconds": round(cold, 3), "warm_upload_seconds": round(warm, 3),
              "first_film": str(first), "second_film": str(second), "labels": state["metrics"],
              "measured": "send_keys on input[type=file] until stMetricValue and film + overlay images show",
              "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (ARTIFACTS / "browser_timing.json").write_text(json.dumps(timing, indent=2) + "\n")
    print(f"\n[browser] cold first upload {cold:.2f} s, warm upload {warm:.2f} s, labels {state['metrics']}")
    assert warm < WARM_SANITY_SECONDS, f"warm upload took {warm:.1f} s (sanity bound {WARM_SANITY_SECONDS} s)"
    # TensorFlow is loaded in the server now; its start-up lines (a cuInit "error" among them) never reach
    # the console of the person who started the app, and Streamlit's own lines still do.
    console = (ARTIFACTS / "browser_streamlit.log").read_text().splitlines()
    assert not [line for line in console if NATIVE_LINE.match(line)], "\n".join(console)
    assert any("You can now view your Streamlit app" in line for line in console), "\n".join(console)


@pytest.mark.parametrize("name", list(PAGES))
def test_page_renders_without_errors(driver, app_url, name):
    driver.get(app_url + PAGES[name])
    _wait_settled(driver, timeout=90)
    _assert_no_error(driver, name)
    title = driver.execute_script("""
        const h = document.querySelector('[data-testid="stMainBlockContainer"] h1');
        return h ? h.innerText : '';""")
    assert title, f"{name}: no page title (h1) rendered"
    sidebar = driver.execute_script("""
        const bar = document.querySelector('[data-testid="stSidebar"]');
        return bar ? bar.innerText : '';""")
    assert "Home" in sidebar and "streamlit app" not in sidebar.lower(), f"{name}: sidebar menu reads {sidebar[:300]!r}"
    # Predict's README screenshot is taken after a film was classified (test above), not of the empty page.
    _screenshot(driver, name, docs=name != "predict")
