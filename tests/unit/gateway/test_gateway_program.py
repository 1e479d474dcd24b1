"""``tidepool gateway`` as a program: its flags, and the two ports it serves."""

import argparse
import urllib.error
import urllib.request

import pytest

import stack
from tidepool.gateway import app


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    app.configure(parser)
    return parser.parse_args(["--static-routes", "unused.yaml", *argv])


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


@pytest.mark.parametrize(
    ("env", "argv", "expected"),
    [
        pytest.param(None, [], "default", id="the-operators-own-default"),
        pytest.param(
            "tidepool-system", [], "tidepool-system", id="pod-namespace-as-the-chart-sets"
        ),
        pytest.param(
            "tidepool-system", ["--shared-engine-namespace", "fleets"], "fleets", id="the-flag-wins"
        ),
    ],
)
def test_the_fleets_namespace_is_the_operators(monkeypatch, env, argv, expected):
    """Fleets run in the operator's namespace (POD_NAMESPACE, as the operator reads it); a
    gateway that watches one namespace watches the fleet pods there as well."""
    if env is None:
        monkeypatch.delenv("POD_NAMESPACE", raising=False)
    else:
        monkeypatch.setenv("POD_NAMESPACE", env)
    assert _args("--namespace", "team-a", *argv).shared_engine_namespace == expected


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
    port, metrics_port = stack.free_port(), stack.free_port()
    gateway = stack.ManagedProcess(
        name="gateway",
        args=[
            "gateway", "--host", "127.0.0.1", "--port", str(port),
            "--metrics-port", str(metrics_port), "--static-routes", str(routes),
            "--log-level", "WARNING",
        ],
        health_url=f"http://127.0.0.1:{port}/readyz",
        log_path=tmp_path / "gateway.log",
    )  # fmt: skip
    try:
        gateway.start(timeout=20)
        status, body = _get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        assert b"tidepool_gateway_" in body
        status, body = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 404
        assert b'"unknown_url"' in body
    finally:
        gateway.stop()
    assert gateway.proc is not None
    assert gateway.proc.returncode == 0, gateway.tail()


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        pytest.param(["--replicas", "0"], "--replicas must be >= 1, got 0", id="no-replicas"),
        pytest.param(
            ["--replica-service", "tidepool-gateway"],
            "--replica-service needs the Kubernetes API",
            id="service-without-a-cluster",
        ),
    ],
)
def test_replica_flags_are_checked(tmp_path, argv, match):
    routes = tmp_path / "routes.yaml"
    routes.write_text("models: []\n")
    with pytest.raises(ValueError, match=match):
        app.build(_args("--static-routes", str(routes), *argv))


def test_api_keys_and_replicas_reach_the_gateway(tmp_path):
    routes, keys = tmp_path / "routes.yaml", tmp_path / "keys.yaml"
    routes.write_text("models: []\n")
    keys.write_text("keys:\n  sk-1: {tenant: acme, requestsPerMinute: 600}\n")
    argv = ("--static-routes", str(routes), "--api-keys", str(keys), "--replicas", "3")
    gw = app.build(_args(*argv))[app.proxy.GATEWAY_KEY]
    assert gw.replicas == 3
    assert gw.keys is not None
    assert gw.keys.lookup("sk-1") == app.auth.TenantKey("acme", 600)
    assert gw.key_file is not None
    assert gw.key_file.path == keys


def test_a_malformed_key_file_stops_the_start(tmp_path):
    routes, keys = tmp_path / "routes.yaml", tmp_path / "keys.yaml"
    routes.write_text("models: []\n")
    keys.write_text("keys:\n  sk-1: {tenant: ''}\n")
    with pytest.raises(ValueError, match=r"entry 1 .*tenant must be a non-empty string"):
        app.build(_args("--static-routes", str(routes), "--api-keys", str(keys)))
