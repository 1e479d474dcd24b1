"""The adapter's PromQL, evaluated by Prometheus' own engine (``promtool test rules``) over
series shaped like an outage, not compared as text.

The case that matters: an engine pod deleted while Prometheus was down. Its scrape loop never
wrote a staleness marker, so a plain instant query keeps answering with its last sample for the
lookback delta (5 minutes, Prometheus' docs on staleness). The control expression below shows
Prometheus doing exactly that; the adapter's queries must not.

Timeline of every case (15 s steps, samples from 0 s): the pod ``gone`` is scraped until 60 s
and deleted during an outage from 60 s to 150 s; ``live`` (its replacement, or a survivor) is
scraped again from 150 s on; queries are evaluated at 180 s, 30 s after the outage ends.
"""

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tidepool.adapters.prometheus import (
    ENGINE_QUEUE,
    GATEWAY_HELD,
    GATEWAY_INFLIGHT,
    GATEWAY_UP,
    POOL_QUEUE,
    SAMPLE_MAX_AGE_SECONDS,
)

TENANT = 'namespace="team-a",inference_deployment="llama"'
GATEWAY = 'namespace="team-a",model="llama-chat"'
#: Samples at 0..60 s, then nothing: deleted during the outage, no staleness marker.
GONE = "{v}x4"
#: Samples at 0..60 s, none during the outage, then again from 150 s.
LIVE = "{v}x4 _x5 {v}x6"
EVAL = "3m"


def engine(metric: str, pod: str, values: str, pool: str = "a100") -> dict[str, str]:
    return {"series": f'{metric}{{{TENANT},pool="{pool}",pod="{pod}"}}', "values": values}


def gateway(metric: str, pod: str, values: str, **extra: str) -> dict[str, str]:
    labels = ",".join([GATEWAY, f'pod="{pod}"', *(f'{k}="{v}"' for k, v in extra.items())])
    return {"series": f"{metric}{{{labels}}}", "values": values}


def expect(expr: str, labels: str | None, value: float | None) -> dict[str, Any]:
    """``expr`` at :data:`EVAL`: one sample with ``labels`` and ``value``, or none at all."""
    samples = [] if value is None else [{"labels": labels or "{}", "value": value}]
    return {"expr": expr, "eval_time": EVAL, "exp_samples": samples}


RUNNING_ON_GONE_POD = [
    engine("vllm:num_requests_running", "gone", GONE.format(v=2)),
    engine("vllm:num_requests_waiting", "gone", GONE.format(v=1)),
    engine("vllm:num_requests_running", "live", LIVE.format(v=0)),
    engine("vllm:num_requests_waiting", "live", LIVE.format(v=0)),
]

CASES = [
    pytest.param(
        RUNNING_ON_GONE_POD,
        [
            # The control: Prometheus itself still counts the deleted pod 30 s after the outage.
            expect(
                "sum by (namespace, inference_deployment) (vllm:num_requests_running)",
                f"{{{TENANT}}}",
                2,
            ),
            expect(ENGINE_QUEUE.promql, f"{{{TENANT}}}", 0),
            expect(POOL_QUEUE.promql, f'{{{TENANT},pool="a100"}}', 0),
        ],
        id="pod-deleted-during-the-outage-counts-nothing",
    ),
    pytest.param(
        [
            engine("vllm:num_requests_running", "live", "3x11"),
            engine("vllm:num_requests_waiting", "live", "4x11"),
            # A pod that misses scrapes but was last seen within the bound (at 105 s) counts.
            engine("vllm:num_requests_running", "slow", "1x7"),
            engine("vllm:num_requests_waiting", "slow", "0x7"),
        ],
        [expect(ENGINE_QUEUE.promql, f"{{{TENANT}}}", 8)],
        id="fresh-and-recent-pods-count",
    ),
    pytest.param(
        [
            engine("vllm:num_requests_running", "gone", GONE.format(v=2)),
            engine("vllm:num_requests_waiting", "gone", GONE.format(v=1)),
        ],
        # No fresh series at all: "no series", which the adapter turns into NoData("engine
        # metrics missing") while replicas are ready; never a zero.
        [expect(ENGINE_QUEUE.promql, None, None)],
        id="only-the-gone-pod-is-no-series",
    ),
    pytest.param(
        [
            # A pod deleted while Prometheus ran: the scrape loop marked it stale at once.
            engine("vllm:num_requests_running", "ended", "2x10 stale"),
            engine("vllm:num_requests_waiting", "ended", "0x10 stale"),
            engine("vllm:num_requests_running", "live", "0x12"),
            engine("vllm:num_requests_waiting", "live", "0x12"),
        ],
        [expect(ENGINE_QUEUE.promql, f"{{{TENANT}}}", 0)],
        id="a-stale-marked-pod-counts-nothing-as-before",
    ),
    pytest.param(
        [
            # Two gateway replicas; one deleted during the outage with 5 requests held.
            gateway("tidepool_gateway_queue_depth", "gw-gone", GONE.format(v=5)),
            gateway("tidepool_gateway_queue_depth", "gw-live", LIVE.format(v=0)),
            gateway("tidepool_gateway_inflight_requests", "gw-gone", GONE.format(v=3), pool="a"),
            gateway("tidepool_gateway_inflight_requests", "gw-live", LIVE.format(v=1), pool="a"),
        ],
        [
            expect(GATEWAY_HELD.promql, f"{{{GATEWAY}}}", 0),
            expect(GATEWAY_INFLIGHT.promql, f'{{{GATEWAY},pool="a"}}', 1),
        ],
        id="gateway-replica-deleted-during-the-outage-holds-nothing",
    ),
    pytest.param(
        [
            # The only gateway replica was replaced during the outage and is not scraped yet.
            {"series": 'up{job="tidepool-gateway",pod="gw-gone"}', "values": GONE.format(v=1)},
        ],
        [expect(GATEWAY_UP.promql, None, None)],
        id="a-gone-gateway-is-not-scraped",
    ),
]


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not installed: run `make deps` (apt-get install prometheus)")
    return path


@pytest.mark.parametrize(("series", "checks"), CASES)
def test_promql_after_an_outage(
    promtool: str, tmp_path: Path, series: list[dict[str, str]], checks: list[dict[str, Any]]
) -> None:
    spec = {
        "rule_files": [],
        "evaluation_interval": "15s",
        "tests": [{"interval": "15s", "input_series": series, "promql_expr_test": checks}],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = subprocess.run(
        [promtool, "test", "rules", "test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_bound_outlasts_a_missed_scrape_of_the_charts_interval() -> None:
    assert SAMPLE_MAX_AGE_SECONDS >= 2 * 15 + 15
    assert SAMPLE_MAX_AGE_SECONDS < 5 * 60  # else nothing changes against the lookback delta
