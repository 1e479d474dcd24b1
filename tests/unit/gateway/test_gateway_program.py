"""``tidepool gateway`` as a program: its flags, and the two ports it serves."""

import argparse
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tidepool.gateway import app


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    app.configure(parser)
    return parser.parse_args(["--static-routes", "unused.yaml", *argv])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_hardening_flags_reach_the_config(tmp_path):
    routes = tmp_path / "routes.yaml"
    routes.write_text("models: []\n")
    args = _args(
        "--static-routes", str(routes), "--max-body-size", "512Ki", "--max-prompt-chars", "1000",
        "--header-timeout", "5s", "--body-timeout", "2m",
    )  # fmt: skip
    config = app.build(args)[app.proxy.GATEWAY_KEY].config
    assert (config.max_body, config.max_prompt_chars) == (512 * 1024, 1000)
    assert (config.header_timeout, config.body_timeout) == (5.0, 120.0)


def test_defaults_limit_the_body_and_keep_metrics_off_the_api_port():
    args = _args()
    assert args.max_body_size == 8 * 1024 * 1024
    assert args.metrics_port != args.port
    assert args.max_prompt_chars == 0


def test_same_port_for_api_and_metrics_is_refused():
    with pytest.raises(ValueError, match="--metrics-port"):
        app.build(_args("--port", "8080", "--metrics-port", "8080"))


#: Loopback only: no proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str) -> tuple[int, bytes]:
    try:
        with _OPENER.open(url, timeout=2) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_program_serves_metrics_on_its_own_port(tmp_path):
    routes = tmp_path / "routes.yaml"
    routes.write_text("models: []\n")
    port, metrics_port = _free_port(), _free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "tidepool", "gateway", "--host", "127.0.0.1",
            "--port", str(port), "--metrics-port", str(metrics_port),
            "--static-routes", str(routes), "--log-level", "WARNING",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if _get(f"http://127.0.0.1:{port}/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "gateway did not become ready"
            time.sleep(0.1)
        status, body = _get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        assert b"tidepool_gateway_" in body
        status, body = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 404
        assert b'"unknown_url"' in body
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if proc.stderr:
            proc.stderr.close()
