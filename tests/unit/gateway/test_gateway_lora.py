"""LoRA tenants on a SharedEngine: routed to the fleet under their adapter's name, answered under
their served name, kept apart from each other, preferring a replica that holds the adapter, and
woken through their own InferenceDeployment. Real engine simulators with LoRA on, on 127.0.0.1."""

import asyncio
import json

import aiohttp
import pytest
from gateway_fakes import FakeDiscovery, FakeWaker
from snapshots import endpoint, route, snapshot

from tidepool.api import labels
from tidepool.enginesim import engine as sim_engine
from tidepool.gateway import auth, proxy, routing
from tidepool.gateway.model import ResponseRewriter, rewrite_request
from tidepool.gateway.snapshot import (
    build_snapshot,
    endpoint_from_pod,
    engine_priority_scheduling,
    model_from_inference_deployment,
)

BASE = "meta-llama/Llama-3.1-8B"
FLEET = "llama-8b"
"""The SharedEngine; its pods' label value is the same (a short name fits a label)."""
ADAPTERS = (
    sim_engine.Adapter("support-bot", "/adapters/support-bot", 8),
    sim_engine.Adapter("sql-bot", "/adapters/sql-bot", 8),
)
LORA = sim_engine.LoraConfig(max_loras=2, modules=ADAPTERS)
#: Tenant A (team-a/bot) serves "bot-chat" as adapter support-bot; B (team-b/sql) "sql-chat".
A = route("bot", namespace="team-a", served="bot-chat", upstream="support-bot", engine=FLEET)
B = route("sql", namespace="team-b", served="sql-chat", upstream="sql-bot", engine=FLEET)
KEYS = auth.KeyRing.parse(
    {"sk-a": {"tenant": "team-a", "requestsPerMinute": 2}, "sk-b": {"tenant": "team-b"}}
)


#: Both tenants' adapters: what the operator's record says a replica holds once it has loaded them.
BOTH = ("support-bot", "sql-bot")


def _pod(name, server, adapters=BOTH, *, priority_scheduling=False, seats=None):
    return endpoint(
        name, namespace="tidepool-system", deployment="", pool="shared-a100", port=server.port,
        engine=FLEET, adapters=adapters, priority_scheduling=priority_scheduling, seats=seats,
    )  # fmt: skip


async def _fleet(engines, n=1, **kw):
    return [await engines(BASE, lora=LORA, **kw) for _ in range(n)]


async def _post(s, gw, body, key=None, path="/v1/completions"):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with s.post(f"http://127.0.0.1:{gw.port}{path}", json=body, headers=headers) as r:
        return r.status, r.headers.copy(), await r.read()


async def _metrics(gw):
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{gw.metrics_port}/metrics") as r,
    ):
        return await r.text()


def _events(raw):
    return [
        json.loads(line[5:])
        for line in raw.decode().splitlines()
        if line.startswith("data:") and line.strip() != "data: [DONE]"
    ]


# ---- route model: adapter name upstream, served name downstream ---------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param("/v1/completions", {"prompt": "hi", "max_tokens": 4}, id="completions"),
        pytest.param(
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
            id="chat",
        ),
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streaming"])
async def test_tenant_reaches_fleet_as_its_adapter_and_sees_its_served_name(
    engines, gateway, path, body, stream
):
    (e,) = await _fleet(engines)
    gw = await gateway(FakeDiscovery(snapshot((A, B), (_pod("sheng-0", e),))))
    async with aiohttp.ClientSession() as s:
        status, headers, raw = await _post(
            s, gw, {**body, "model": "bot-chat", "stream": stream}, path=path
        )
    # The simulator answers 404 for any name it does not serve, "bot-chat" included: a 200
    # means the body reached it naming the adapter.
    assert status == 200, raw
    assert headers[proxy.BACKEND_HEADER] == "tidepool-system/sheng-0"
    assert b"support-bot" not in raw
    answers = _events(raw) if stream else [json.loads(raw)]
    assert len(answers) >= (5 if stream else 1)
    assert {a["model"] for a in answers} == {"bot-chat"}
    assert answers[-1]["usage"]["completion_tokens"] == 4
    if stream:
        assert raw.rstrip().endswith(b"data: [DONE]")
    assert (
        'tidepool_gateway_tokens_total{kind="completion",model="bot-chat",'
        'namespace="team-a",tenant="team-a"} 4.0' in await _metrics(gw)
    )


async def test_two_tenants_share_the_fleet_each_under_its_own_names(engines, gateway):
    (e,) = await _fleet(engines)
    gw = await gateway(FakeDiscovery(snapshot((A, B), (_pod("sheng-0", e),))))
    body = {"prompt": "hi", "max_tokens": 2}
    async with aiohttp.ClientSession() as s:
        got = await asyncio.gather(
            _post(s, gw, {**body, "model": "bot-chat"}), _post(s, gw, {**body, "model": "sql-chat"})
        )
    assert [(st, json.loads(raw)["model"]) for st, _, raw in got] == [
        (200, "bot-chat"),
        (200, "sql-chat"),
    ]
    assert {h[proxy.BACKEND_HEADER] for _, h, _ in got} == {"tidepool-system/sheng-0"}


# ---- isolation: keys, 404s, limits ---------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "model", "expected"),
    [
        pytest.param("sk-a", "bot-chat", 200, id="own-served-name"),
        pytest.param("sk-b", "support-bot", 404, id="other-tenants-adapter"),
        pytest.param("sk-a", "support-bot", 404, id="own-adapter-name-is-not-a-served-name"),
        pytest.param("sk-b", "bot-chat", 404, id="other-tenants-served-name"),
        pytest.param("sk-b", BASE, 404, id="fleet-base-model"),
        pytest.param(None, "support-bot", 404, id="adapter-name-without-keys"),
    ],
)
async def test_adapter_names_are_not_addressable(engines, gateway, key, model, expected):
    (e,) = await _fleet(engines)
    gw = await gateway(
        FakeDiscovery(snapshot((A, B), (_pod("sheng-0", e),))), keys=KEYS if key else None
    )
    body = {"prompt": "hi", "max_tokens": 2}
    async with aiohttp.ClientSession() as s:
        status, _, raw = await _post(s, gw, {**body, "model": model}, key)
        _, _, unknown = await _post(s, gw, {**body, "model": "no-such-model"}, key)
    assert status == expected
    if expected == 404:
        # Byte for byte the unknown model's answer, but for the name the caller sent.
        assert raw == unknown.replace(b"no-such-model", model.encode())


async def test_rate_limit_and_metering_are_per_tenant_on_a_shared_fleet(engines, gateway):
    (e,) = await _fleet(engines)
    gw = await gateway(FakeDiscovery(snapshot((A, B), (_pod("sheng-0", e),))), keys=KEYS)
    body = {"prompt": "hi", "max_tokens": 3}
    async with aiohttp.ClientSession() as s:
        a = [(await _post(s, gw, {**body, "model": "bot-chat"}, "sk-a"))[0] for _ in range(3)]
        b = [(await _post(s, gw, {**body, "model": "sql-chat"}, "sk-b"))[0] for _ in range(3)]
    assert (a, b) == ([200, 200, 429], [200, 200, 200])
    text = await _metrics(gw)
    for model, ns, tokens in (("bot-chat", "team-a", 6.0), ("sql-chat", "team-b", 9.0)):
        assert (
            f'tidepool_gateway_tokens_total{{kind="completion",model="{model}",'
            f'namespace="{ns}",tenant="{ns}"}} {tokens}' in text
        )
    assert [n for n in ("support-bot", "sql-bot", FLEET) if n in text] == []


# ---- adapter affinity ----------------------------------------------------------------------


# The picker's own tables (affinity rows included) are in test_gateway_picking and
# test_gateway_adapter_affinity.


async def test_requests_go_to_the_replica_holding_the_adapter(engines, gateway):
    cold, warm = await _fleet(engines, 2)
    pods = (_pod("sheng-0", cold, ()), _pod("sheng-1", warm, ("support-bot",)))
    gw = await gateway(FakeDiscovery(snapshot((A,), pods)))
    async with aiohttp.ClientSession() as s:
        got = [await _post(s, gw, {"model": "bot-chat", "prompt": "x", "max_tokens": 1})]
        got += [await _post(s, gw, {"model": "bot-chat", "prompt": "x", "max_tokens": 1})]
    # Sequential requests rotate over idle replicas (test_gateway_picking); affinity overrides.
    assert [(st, h[proxy.BACKEND_HEADER]) for st, h, _ in got] == [
        (200, "tidepool-system/sheng-1")
    ] * 2


# ---- routing table -------------------------------------------------------------------------


def test_fleet_pods_serve_every_tenant_of_the_fleet_and_nobody_else():
    own = endpoint("bot-own", namespace="team-a", deployment="bot", pool="dedicated-a")
    fleet = endpoint("sheng-0", namespace="tidepool-system", deployment="", engine=FLEET)
    other = endpoint("sheng-x", namespace="tidepool-system", deployment="", engine="qwen-7b")
    plain = route("llama", namespace="team-c")
    table = routing.RoutingTable.from_snapshot(
        snapshot((A, B, plain), (own, fleet, other, endpoint("l0", namespace="team-c")))
    )
    pods = {t.route.name: [b.endpoint.pod for b in t.backends] for t in table.targets()}
    assert pods == {"bot": ["sheng-0"], "sql": ["sheng-0"], "llama": ["l0"]}
    assert table.lookup("support-bot") is None


# ---- wake ----------------------------------------------------------------------------------


async def test_a_request_waits_until_a_ready_replica_holds_its_adapter(engines, gateway):
    (e,) = await _fleet(engines)
    source = FakeDiscovery(snapshot((A, B), (_pod("sheng-0", e, ()),)))
    gw = await gateway(source, FakeWaker(), queue_timeout=10.0)
    async with aiohttp.ClientSession() as s:
        pending = asyncio.create_task(_post(s, gw, {"model": "bot-chat", "prompt": "x"}))
        await asyncio.sleep(0.2)
        # Ready, but not holding the adapter yet: sending it there would be vLLM's 404.
        assert not pending.done()
        source.publish(snapshot((A, B), (_pod("sheng-0", e, ("support-bot",)),)))
        status, _, raw = await pending
    assert (status, json.loads(raw)["model"]) == (200, "bot-chat")


async def test_held_request_wakes_the_tenant_and_runs_when_the_fleet_is_up(engines, gateway):
    (e,) = await _fleet(engines)
    source, waker = FakeDiscovery(snapshot((A, B))), FakeWaker()
    gw = await gateway(source, waker, queue_timeout=10.0)
    async with aiohttp.ClientSession() as s:
        pending = asyncio.create_task(_post(s, gw, {"model": "bot-chat", "prompt": "x"}))
        await asyncio.sleep(0.1)
        # The tenant's own InferenceDeployment: the operator's SharedEngine planner reads its
        # wake annotation as a wake of the fleet, and the gateway may already patch it.
        assert [c[:2] for c in waker.calls] == [("team-a", "bot")]
        source.publish(snapshot((A, B), (_pod("sheng-0", e),)))
        status, _, raw = await pending
    assert (status, json.loads(raw)["model"]) == (200, "bot-chat")


# ---- discovery: from API JSON --------------------------------------------------------------


def _infd(adapter=None, engine=None, served="bot-chat"):
    model = {"name": BASE, "servedName": served}
    if adapter:
        model["adapter"] = {"name": adapter, "source": f"/adapters/{adapter}", "rank": 16}
    status = {"engine": engine} if engine is not None else {}
    return {
        "metadata": {"name": "bot", "namespace": "team-a"},
        "spec": {"model": model},
        "status": status,
    }


@pytest.mark.parametrize(
    ("obj", "upstream", "engine", "adapter"),
    [
        pytest.param(_infd(), None, None, None, id="no-adapter"),
        pytest.param(
            _infd("support-bot", FLEET), "support-bot", FLEET, "support-bot", id="on-shared-engine"
        ),
        pytest.param(
            _infd("support-bot", ""), "support-bot", None, "support-bot",
            id="adapter-on-own-replicas",
        ),
        pytest.param(
            _infd("bot-chat", FLEET, served="bot-chat"), None, FLEET, "bot-chat",
            id="adapter-is-served-name-no-rewrite-but-affinity",
        ),
    ],
)  # fmt: skip
def test_route_from_inference_deployment(obj, upstream, engine, adapter):
    r = model_from_inference_deployment(obj)
    assert (r.served_model, r.upstream_model, r.engine, r.adapter) == (
        "bot-chat",
        upstream,
        engine,
        adapter,
    )


def _engine_pod(name="sheng-llama-8b-abc", engine_label=FLEET):
    return {
        "metadata": {
            "name": name,
            "namespace": "tidepool-system",
            "labels": {
                labels.COMPONENT: labels.COMPONENT_ENGINE,
                labels.SHARED_ENGINE: engine_label,
                labels.POOL: "shared-a100",
            },
        },
        "status": {"podIP": "10.0.0.7", "conditions": [{"type": "Ready", "status": "True"}]},
    }


@pytest.mark.parametrize(
    ("owner", "expected"),
    [
        pytest.param({labels.SHARED_ENGINE: FLEET}, ("", FLEET), id="fleet-pod"),
        pytest.param({labels.INFERENCE_DEPLOYMENT: "bot"}, ("bot", ""), id="tenant-pod"),
        pytest.param({}, None, id="no-owner-no-traffic"),
    ],
)
def test_engine_pod_owner(owner, expected):
    pod = _engine_pod()
    pod["metadata"]["labels"] = {labels.COMPONENT: labels.COMPONENT_ENGINE, **owner}
    e = endpoint_from_pod(pod)
    assert (None if e is None else (e.deployment, e.engine)) == expected


def _shared_engine(adapters, name=FLEET):
    """A SharedEngine as the API serves it; ``adapters``: (name, tenant, pods holding it)."""
    return {
        "metadata": {"name": name},
        "spec": {"model": {"name": BASE}, "pool": "shared-a100"},
        "status": {
            "adapters": [
                {"name": n, "tenant": t, "loadedReplicas": len(pods), "replicas": pods}
                for n, t, pods in adapters
            ],
        },
    }


BOTH_LOADED = [
    ("support-bot", "team-a/bot", ["sheng-0", "sheng-1"]),
    ("sql-bot", "team-b/sql", ["sheng-1"]),
]


@pytest.mark.parametrize(
    ("engines", "held"),
    [
        pytest.param({}, [set(), set()], id="no-record-yet"),
        pytest.param(
            {"/e": _shared_engine(BOTH_LOADED)},
            [{"support-bot"}, {"support-bot", "sql-bot"}],
            id="each-pod-holds-what-the-record-names-on-it",
        ),
        pytest.param(
            {"/e": _shared_engine([("support-bot", "team-a/bot", []), BOTH_LOADED[1]])},
            [set(), {"sql-bot"}],
            id="loaded-nowhere-yet",
        ),
        pytest.param(
            {"/e": _shared_engine([("support-bot", "team-a/bot", ["sheng-9"])])},
            [set(), set()],
            id="a-pod-that-is-gone-holds-nothing-here",
        ),
        pytest.param(
            {"/e": _shared_engine(BOTH_LOADED, name="qwen-7b")},
            [set(), set()],
            id="another-fleets-record",
        ),
    ],
)
def test_build_snapshot_gives_fleet_pods_their_recorded_adapters(engines, held):
    pods = {f"p{i}": _engine_pod(f"sheng-{i}") for i in range(2)}
    snap = build_snapshot(pods, {"i": _infd("support-bot", FLEET)}, engines)
    assert [(e.pod, e.engine, e.deployment, set(e.adapters)) for e in snap.endpoints] == [
        (f"sheng-{i}", FLEET, "", h) for i, h in enumerate(held)
    ]


def test_engine_pod_of_a_long_named_fleet_matches_its_route():
    long_name = "llama-3.1-8b-instruct-" + "x" * 60
    r = model_from_inference_deployment(_infd("support-bot", long_name))
    pod = endpoint_from_pod(_engine_pod(engine_label=r.engine_label))
    table = routing.RoutingTable.from_snapshot(snapshot((r,), (pod,)))
    assert len(r.engine_label) <= 63
    assert [b.endpoint.pod for b in table.targets()[0].backends] == ["sheng-llama-8b-abc"]


# ---- the rewriting itself ------------------------------------------------------------------


def test_rewrite_request_keeps_every_other_field():
    payload = {"model": "bot-chat", "prompt": "hi", "stream": True, "n": 2}
    assert json.loads(rewrite_request(payload, "support-bot")) == {
        **payload,
        "model": "support-bot",
    }


@pytest.mark.parametrize(
    ("sent", "priority", "expected"),
    [
        pytest.param({}, None, {}, id="fcfs-replica-no-priority"),
        pytest.param({}, 3, {"priority": 3}, id="the-gateways-priority"),
        pytest.param({"priority": -100}, 2, {"priority": 2}, id="a-client-cannot-jump-the-queue"),
        pytest.param({"priority": 5}, None, {}, id="a-client-priority-never-reaches-fcfs"),
    ],
)
def test_rewrite_request_priority(sent, priority, expected):
    payload = {"model": "bot-chat", "prompt": "hi", **sent}
    assert json.loads(rewrite_request(payload, "support-bot", priority)) == {
        "model": "support-bot",
        "prompt": "hi",
        **expected,
    }


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param({"schedulingPolicy": "priority"}, True, id="rolled-out"),
        pytest.param({"schedulingPolicy": "fcfs"}, False, id="fcfs-or-rolling-out"),
        pytest.param({}, False, id="no-status-yet"),
        pytest.param({"schedulingPolicy": 7}, False, id="unreadable"),
    ],
)
def test_engine_priority_scheduling(status, expected):
    engine = {"metadata": {"name": FLEET}, "status": status}
    assert engine_priority_scheduling(engine) is expected
    snap = build_snapshot({"p": _engine_pod(engine_label=FLEET)}, {}, {f"/{FLEET}": engine})
    assert [e.priority_scheduling for e in snap.endpoints] == [expected]


async def test_a_clients_priority_is_dropped_before_an_fcfs_fleet(engines, gateway):
    """vLLM under its default fcfs refuses any priority but 0; a tenant's own ``priority`` would
    also let it jump the other tenants' requests. The gateway drops it: 200, not vLLM's 400."""
    (e,) = await _fleet(engines)
    gw = await gateway(FakeDiscovery(snapshot((A, B), (_pod("sheng-0", e),))))
    async with aiohttp.ClientSession() as s:
        status, _, raw = await _post(
            s, gw, {"model": "bot-chat", "prompt": "hi", "max_tokens": 2, "priority": 5}
        )
    assert status == 200, raw


async def test_tenants_on_a_priority_fleet_are_answered_with_the_gateways_priorities(
    engines, gateway
):
    """A fleet replica of one seat running vLLM's priority scheduling, and a gateway that knows
    it: a tenant's second, third... concurrent request is beyond its fair share of the seat and
    carries priority 1, which the engine takes. Against an fcfs replica the same priority would
    be refused (vLLM's 400), which is why the gateway sends it only where the SharedEngine's
    status says every replica schedules by priority."""
    (e,) = await _fleet(engines, max_num_seqs=1, scheduling_policy="priority")
    gw = await gateway(
        FakeDiscovery(snapshot((A, B), (_pod("sheng-0", e, priority_scheduling=True, seats=1),)))
    )
    body = {"prompt": "hi", "max_tokens": 4}
    async with aiohttp.ClientSession() as s:
        got = await asyncio.gather(
            *(_post(s, gw, {**body, "model": "bot-chat"}) for _ in range(4)),
            _post(s, gw, {**body, "model": "sql-chat"}),
        )
    assert [st for st, _, _ in got] == [200] * 5
    (fcfs,) = await _fleet(engines, max_num_seqs=1)
    gw2 = await gateway(
        FakeDiscovery(snapshot((A, B), (_pod("sheng-1", fcfs, priority_scheduling=True, seats=1),)))
    )
    async with aiohttp.ClientSession() as s:
        refused = await asyncio.gather(
            *(_post(s, gw2, {**body, "model": "bot-chat"}) for _ in range(3))
        )
    assert 400 in [st for st, _, _ in refused], "the gateway sent no priority"


SSE = b'data: {"model":"support-bot","choices":[]}\n\ndata: [DONE]\n\n'
RENAMED_SSE = b'data: {"model":"bot-chat","choices":[]}\n\ndata: [DONE]\n\n'


@pytest.mark.parametrize(
    ("content_type", "encoding", "chunks", "expected"),
    [
        pytest.param("text/event-stream", "", [SSE], RENAMED_SSE, id="sse"),
        pytest.param(
            "text/event-stream", "", [SSE[:17], SSE[17:30], SSE[30:]], RENAMED_SSE,
            id="sse-event-split-over-chunks",
        ),
        pytest.param(
            "text/event-stream", "", [SSE.replace(b"\n", b"\r\n")],
            RENAMED_SSE.replace(b"\n", b"\r\n"), id="sse-crlf",
        ),
        pytest.param(
            "text/event-stream", "", [b'data: {"model":"other"}\n\n'],
            b'data: {"model":"other"}\n\n', id="sse-other-model-untouched",
        ),
        pytest.param(
            "application/json", "", [b'{"model": "support-', b'bot", "usage": {}}'],
            b'{"model":"bot-chat","usage":{}}', id="json",
        ),
        pytest.param(
            "application/json", "", [b'{"error": {"message": "x"}}'],
            b'{"error": {"message": "x"}}', id="json-without-model-untouched",
        ),
        pytest.param(
            "application/json", "gzip", [b'{"model":"support-bot"}'],
            b'{"model":"support-bot"}', id="compressed-passes-through",
        ),
        pytest.param(
            "text/plain", "", [b"support-bot"], b"support-bot", id="other-type-passes-through"
        ),
    ],
)  # fmt: skip
def test_response_rewriter(content_type, encoding, chunks, expected):
    rw = ResponseRewriter(content_type, encoding, "support-bot", "bot-chat")
    out = b"".join(rw.feed(c) for c in chunks) + rw.finish()
    assert out == expected


def test_response_rewriter_sends_each_event_as_soon_as_its_line_ends():
    rw = ResponseRewriter("text/event-stream", "", "support-bot", "bot-chat")
    end = SSE.index(b"\n") + 1
    assert rw.feed(SSE[:20]) == b""
    assert rw.feed(SSE[20:end]) == b'data: {"model":"bot-chat","choices":[]}\n'
