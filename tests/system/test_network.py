"""The README's `streamlit run streamlit_app.py`, as written, is safe on a shared network.

The project's .streamlit/config.toml decides: the server listens on loopback only, and its WebSocket (which
carries every widget action) is served only to the allowed Host names, so a web page that reaches the
server through DNS rebinding (a foreign Host and Origin) cannot drive Predict or Training.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from pacs_fixture import free_port, listening_addresses

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`streamlit run streamlit_app.py` with only a free port added: the address comes from the config."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("network") / "streamlit.log"
    env = {**os.environ, "PARU_MODELS_DIR": str(tmp_path_factory.mktemp("models"))}
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.fileWatcherType", "none"],
            cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.3)
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def test_the_config_binds_loopback_and_names_the_allowed_hosts():
    server_config = tomllib.loads((PROJECT_ROOT / ".streamlit" / "config.toml").read_text())["server"]
    assert server_config["address"] == "127.0.0.1"
    assert set(server_config["allowedHosts"]) == {"localhost", "127.0.0.1", "::1"}
    assert server_config["enableXsrfProtection"] is True


def test_the_server_listens_on_loopback_only(server):
    addresses = listening_addresses(server)
    assert addresses, "no listening socket found for the server's port"
    # 0100007F is 127.0.0.1 in /proc's byte order; 00000000 (or the IPv6 ::) would be every interface.
    assert addresses == {"0100007F"}, addresses


def _websocket(port: int, host: str, origin: str):
    import websocket  # websocket-client, a dependency of selenium (requirements-dev.txt)

    return websocket.create_connection(f"ws://127.0.0.1:{port}/_stcore/stream", timeout=10,
                                       host=host, origin=origin, subprotocols=["streamlit"])


def test_a_rebinding_websocket_with_a_foreign_host_is_refused(server):
    import websocket

    with pytest.raises(websocket.WebSocketBadStatusException):
        _websocket(server, host=f"attacker.example:{server}", origin=f"http://attacker.example:{server}")
    # The same handshake under the app's own name is served.
    connection = _websocket(server, host=f"localhost:{server}", origin=f"http://localhost:{server}")
    connection.close()
