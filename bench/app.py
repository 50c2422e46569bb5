"""Warm-upload latency of the Predict page in a real browser, and the app's peak memory, in one run.

    python bench/app.py [--uploads 10] [--model RUN_DIR] [--profile]

Starts `streamlit run streamlit_app.py` (headless, a free loopback port, KERAS_HOME set to
../shared/keras_home when it exists) and drives Debian's headless Chromium through Selenium. On the Predict
page it does one warm-up upload (the model loads), then for each size (a 512 px PNG of a real nih-cxr4 film,
and a 1024 px PNG made from it) N uploads of films the app has not seen yet, each on a freshly loaded Predict
page. Each upload is timed from `send_keys` on the file input until the predicted label (st.metric) and the
film and its Grad-CAM overlay (two loaded <img>) are in the DOM; the page itself records the moment it sees
them (checked every 10 ms), so Selenium's polling adds nothing. Reports p50/p95 per size and the peak
resident memory (VmHWM) of the Streamlit server with the model loaded. With --profile, py-spy samples the
server during the timed uploads and writes bench/results/app-profile.txt (where the server's time goes).

Writes bench/results/app.json. Skips with a message (exit 0) when Chromium, chromedriver, selenium or the
films are missing. The films are written to a temporary folder, never into the project.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = PROJECT_ROOT.parent / "shared"
FILMS = SHARED / "data" / "nih-cxr4"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
RESULTS = PROJECT_ROOT / "bench" / "results"

# Installed in the page before each upload: records Date.now() the first time a predicted label and two
# loaded images (film + overlay) are present, checking every 10 ms.
_ARM_JS = """
window.__paruDone = null;
if (window.__paruTimer) clearInterval(window.__paruTimer);
window.__paruTimer = setInterval(() => {
  const metrics = document.querySelectorAll('[data-testid="stMetricValue"]').length;
  let images = 0;
  for (const img of document.querySelectorAll('[data-testid="stImage"] img, [data-testid="stImageContainer"] img')) {
    if (img.complete && img.naturalWidth > 0) images += 1;
  }
  if (metrics >= 1 && images >= 2) {
    window.__paruDone = Date.now();
    clearInterval(window.__paruTimer);
  }
}, 10);
"""
_STATE_JS = """
const app = document.querySelector('[data-testid="stApp"]');
const q = (s) => document.querySelectorAll(s).length;
return {script: app ? app.getAttribute('data-test-script-state') : null,
        busy: q('[data-testid="stSpinner"]') + q('[data-testid="stSkeleton"]'),
        inputs: q('input[type="file"]'),
        errors: q('[data-testid="stException"]')};
"""


def skip_reason() -> str | None:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        return f"Chromium ({CHROMIUM}) or chromedriver ({CHROMEDRIVER}) is missing: apt-get install chromium chromium-driver"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -r requirements-dev.txt"
    if not sorted(FILMS.rglob("*.png")):
        return f"no real films (*.png) under {FILMS}"
    return None


def write_films(folder: Path, count: int) -> dict[str, list[Path]]:
    """`count` distinct real films as 512 px PNGs and as 1024 px PNGs made from them (plus one warm-up)."""
    sources = sorted(FILMS.rglob("*.png"))[: count + 1]
    films: dict[str, list[Path]] = {"512 px PNG": [], "1024 px PNG": []}
    for index, source in enumerate(sources):
        gray = Image.open(source).convert("L")
        small = gray.resize((512, 512), Image.Resampling.BILINEAR) if gray.size != (512, 512) else gray
        for key, image in (("512 px PNG", small), ("1024 px PNG", small.resize((1024, 1024), Image.Resampling.BILINEAR))):
            path = folder / key.split()[0] / f"film-{index:02d}-{source.stem}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path, format="PNG")
            films[key].append(path)
    return films


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def memory_kib(pid: int) -> dict:
    """VmHWM (peak resident) and VmRSS of a process in KiB, from /proc/<pid>/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(rest.split()[0])
    return values


def app_environment(models_dir: Path | None = None) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if models_dir is not None:
        env["PARU_MODELS_DIR"] = str(models_dir)
    if (SHARED / "keras_home").is_dir():
        env.setdefault("KERAS_HOME", str(SHARED / "keras_home"))
    return env


def start_app(port: int, models_dir: Path, log_path: Path) -> subprocess.Popen:
    env = app_environment(models_dir)
    command = [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none"]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=open(log_path, "w"),
                               stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while not healthy(f"http://127.0.0.1:{port}/_stcore/health"):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise RuntimeError(f"streamlit did not start; see {log_path}:\n{log_path.read_text()[-2000:]}")
        time.sleep(0.5)
    return process


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def start_browser(profile: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000", "--no-proxy-server", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    browser.set_page_load_timeout(60)
    return browser


def wait_ready(browser, timeout: float = 90.0) -> None:
    """Until the Predict page has finished its script run, shows the file input and nothing is loading."""
    deadline = time.monotonic() + timeout
    calm_since = None
    while time.monotonic() < deadline:
        state = browser.execute_script(_STATE_JS)
        if state["errors"]:
            raise RuntimeError("the page shows an exception: " + browser.execute_script("return document.body.innerText")[:2000])
        if state["script"] == "notRunning" and not state["busy"] and state["inputs"]:
            calm_since = calm_since or time.monotonic()
            if time.monotonic() - calm_since > 0.5:
                return
        else:
            calm_since = None
        time.sleep(0.1)
    raise RuntimeError(f"the Predict page did not settle in {timeout:.0f} s")


def timed_upload(browser, url: str, film: Path, timeout: float) -> float:
    """Open a fresh Predict page, upload `film`, return seconds from send_keys to label + overlay shown."""
    browser.get(url)
    wait_ready(browser)
    browser.execute_script(_ARM_JS)
    file_input = browser.find_elements("css selector", 'input[type="file"]')[0]
    started = time.time()
    file_input.send_keys(str(film))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = browser.execute_script("return window.__paruDone")
        if done:
            return done / 1000.0 - started
        if browser.find_elements("css selector", '[data-testid="stException"]'):
            raise RuntimeError("exception after upload: " + browser.execute_script("return document.body.innerText")[:2000])
        time.sleep(0.1)
    raise RuntimeError(f"{film.name}: no label and overlay after {timeout:.0f} s")


def summary(seconds: list[float]) -> dict:
    return {"p50_s": float(np.percentile(seconds, 50)), "p95_s": float(np.percentile(seconds, 95)),
            "min_s": float(min(seconds)), "max_s": float(max(seconds)), "n": len(seconds),
            "samples_s": [round(value, 4) for value in seconds]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=10, help="timed uploads per film size (default 10)")
    parser.add_argument("--model", default=str(PROJECT_ROOT / "models" / "demo-nih-cxr4"))
    parser.add_argument("--profile", action="store_true", help="sample the server with py-spy during the uploads")
    parser.add_argument("--out", default=str(RESULTS / "app.json"))
    args = parser.parse_args()
    reason = skip_reason()
    if reason:
        print(f"skipped: {reason}")
        return 0

    work = Path(tempfile.mkdtemp(prefix="paru-bench-app-"))
    # The app sees only the chosen run, and its audit log goes to the temporary folder, not models/.
    models_dir = work / "models"
    models_dir.mkdir()
    (models_dir / Path(args.model).name).symlink_to(Path(args.model).resolve())
    films = write_films(work / "films", args.uploads)
    # Convert the model for the fast engine first (core.serving.lite; a no-op when a converted copy is cached),
    # so that the timed uploads measure what every upload after the first minutes of an app's life sees.
    subprocess.run([sys.executable, "-m", "core", "predict", "--engine", "lite", "--model", args.model,
                    str(films["512 px PNG"][-1])], cwd=PROJECT_ROOT, env=app_environment(),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    port = free_port()
    url = f"http://127.0.0.1:{port}/Predict"
    process = start_app(port, models_dir, work / "streamlit.log")
    browser = None
    spy = None
    results: dict = {}
    try:
        browser = start_browser(str(work / "chromium"))
        started = time.monotonic()
        warm_up = timed_upload(browser, url, films["512 px PNG"][-1], timeout=180)
        print(f"warm-up upload (model load included): {warm_up:.2f} s, wall {time.monotonic() - started:.1f} s")
        memory_loaded = memory_kib(process.pid)
        if args.profile:
            spy_out = RESULTS / "app-profile.txt"
            spy = subprocess.Popen(["py-spy", "record", "--pid", str(process.pid), "--format", "raw", "--rate", "200",
                                    "--output", str(work / "profile.raw"), "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        for key, paths in films.items():
            seconds = [timed_upload(browser, url, path, timeout=60) for path in paths[: args.uploads]]
            results[key] = summary(seconds)
        page_text = browser.execute_script("return document.body.innerText")
        engine = next((name for name in ("TensorFlow Lite", "Keras") if f" ms on {name}" in page_text),
                                 "unknown")
        print(f"engine that answered: {engine}")
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
            write_profile(work / "profile.raw", spy_out)
            print(f"py-spy profile: {spy_out}")
        memory_end = memory_kib(process.pid)
    finally:
        if browser is not None:
            browser.quit()
        stop(process)

    load = os.getloadavg()
    print(f"\nwarm upload on the Predict page, send_keys -> label + overlay shown (load average {load[0]:.2f})")
    print(f"{'film':14s} {'p50 s':>7s} {'p95 s':>7s} {'min s':>7s} {'max s':>7s} {'n':>3s}")
    for key, row in results.items():
        print(f"{key:14s} {row['p50_s']:7.3f} {row['p95_s']:7.3f} {row['min_s']:7.3f} {row['max_s']:7.3f} {row['n']:3d}")
    print(f"streamlit server peak resident memory (VmHWM): {memory_loaded['VmHWM'] / 1024:.0f} MiB with the model "
          f"loaded, {memory_end['VmHWM'] / 1024:.0f} MiB after all uploads (VmRSS {memory_end['VmRSS'] / 1024:.0f} MiB)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "run": Path(args.model).name, "uploads_per_size": args.uploads,
        "measured": "fresh Predict page; send_keys on input[type=file] until stMetricValue and film + overlay "
                    "<img> loaded (checked in the page every 10 ms); each film new to the app (no cache hit)",
        "warm_up_upload_s": round(warm_up, 3), "engine": engine, "uploads": results,
        "server_memory_mib": {"vmhwm_model_loaded": round(memory_loaded["VmHWM"] / 1024, 1),
                              "vmhwm_after_uploads": round(memory_end["VmHWM"] / 1024, 1),
                              "vmrss_after_uploads": round(memory_end["VmRSS"] / 1024, 1)},
        "load_average": [round(value, 2) for value in load], "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def write_profile(raw: Path, out: Path, top: int = 80) -> None:
    """Summarise py-spy's collapsed stacks: share of busy samples per frame (inclusive), the heaviest first.

    Stacks that end waiting (select, sleep, lock or queue waits) are idle threads, not work, and are left out.
    """
    idle_leaves = ("select (", "EpollSelector.select (", "sleep (", "wait (", "_wait_for_tstate_lock (", "acquire (", "get (", "poll (")
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines() if raw.exists() else []:
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or frames[-1].startswith(idle_leaves) or "polling_path_watcher" in stack:
            continue
        total += int(count)
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + int(count)
    rows = sorted(inclusive.items(), key=lambda item: -item[1])[:top]
    out.write_text(f"{total} busy samples\n" + "".join(f"{count / max(total, 1):6.1%}  {frame}\n" for frame, count in rows))

if __name__ == "__main__":
    sys.exit(main())
