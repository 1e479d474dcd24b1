"""How a replica reads Kopf's peering records and ranks itself among the running replicas."""

import argparse
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidepool.adapters.peering import Peer, parse_peers, standby_priority, start_rank
from tidepool.api import crdgen
from tidepool.handlers.main import positive_int, replica_identity, user_agent

T0 = datetime(2026, 9, 2, 10, 0, 0, tzinfo=UTC)
TEN = timedelta(seconds=10)


def test_parse_peers_reads_kopfs_records_and_skips_malformed_ones() -> None:
    status = {
        "a": {"priority": -5, "lifetime": 10, "lastseen": "2026-09-02T10:00:00+00:00"},
        "b": {"priority": 3, "lifetime": 60, "lastseen": "2026-09-02T10:00:01.5Z"},
        "no-lastseen": {"priority": 1},
        "naive-time": {"priority": 1, "lastseen": "2026-09-02T10:00:00"},
        "not-a-map": 7,
        "bad-priority": {"priority": "high", "lastseen": "2026-09-02T10:00:00Z"},
    }
    assert parse_peers(status) == [
        Peer("a", -5, TEN, T0),
        Peer("b", 3, timedelta(seconds=60), T0 + timedelta(seconds=1.5)),
    ]
    assert parse_peers(None) == []


@pytest.mark.parametrize(
    ("seconds_after", "alive"),
    [(0, True), (9.999, True), (10, False), (30, False)],
)
def test_a_peer_is_dead_once_its_lifetime_has_passed(seconds_after: float, alive: bool) -> None:
    assert Peer("a", 0, TEN, T0).alive(T0 + timedelta(seconds=seconds_after)) is alive


def test_start_rank_worked_example() -> None:
    # 2026-09-02T10:00:00Z is 1788343200 s after the epoch.
    assert start_rank(T0) == -1_788_343_200_000
    assert start_rank(T0 + timedelta(milliseconds=1)) == -1_788_343_200_001


@pytest.mark.parametrize(
    ("peers", "expect"),
    [
        pytest.param([], start_rank(T0), id="alone: from the start time"),
        pytest.param([Peer("a", 5, TEN, T0)], start_rank(T0), id="below a higher live peer"),
        pytest.param(
            [Peer("a", start_rank(T0) + 100, TEN, T0)],
            start_rank(T0),
            id="an older replica ranks higher already",
        ),
        pytest.param(
            [Peer("a", start_rank(T0) - 100, TEN, T0)],
            start_rank(T0) - 101,
            id="a clock behind ours: still below the live peer",
        ),
        pytest.param(
            [Peer("a", start_rank(T0) - 100, TEN, T0 - timedelta(seconds=11))],
            start_rank(T0),
            id="a dead peer does not count",
        ),
        pytest.param(
            [Peer("me", start_rank(T0) - 100, TEN, T0)],
            start_rank(T0),
            id="our own old record does not count",
        ),
    ],
)
def test_standby_priority(peers: list[Peer], expect: int) -> None:
    assert standby_priority(peers, identity="me", started_at=T0, now=T0) == expect


@given(
    st.lists(
        st.tuples(st.integers(-(2**50), 2**50), st.integers(0, 30)), max_size=6, unique_by=str
    ),
    st.integers(0, 10**6),
)
def test_a_newcomer_ranks_strictly_below_every_live_peer(
    records: list[tuple[int, int]], start_ms: int
) -> None:
    peers = [
        Peer(f"p{i}", prio, TEN, T0 - timedelta(seconds=age))
        for i, (prio, age) in enumerate(records)
    ]
    started = T0 + timedelta(milliseconds=start_ms)
    mine = standby_priority(peers, identity="me", started_at=started, now=T0)
    assert all(mine < p.priority for p in peers if p.alive(T0))
    assert mine <= start_rank(started)


def test_identity_and_user_agent_fit_a_status_key_and_a_field_manager(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POD_ID", "tidepool-operator-7c9f/x2k4p")
    assert replica_identity() == "tidepool-operator-7c9f-x2k4p"
    # The API server names a patch's field manager after the User-Agent up to its first "/".
    assert user_agent("op-1").split("/")[0] == "tidepool-operator@op-1"
    monkeypatch.delenv("POD_ID")
    monkeypatch.setenv("POD_NAME", "tidepool-operator-7c9f-abcde")
    assert replica_identity() == "tidepool-operator-7c9f-abcde"
    monkeypatch.delenv("POD_NAME")
    assert "/" not in replica_identity()


@pytest.mark.parametrize(("text", "ok"), [("1", True), ("10", True), ("0", False), ("-3", False)])
def test_peering_lifetime_must_be_positive(text: str, ok: bool) -> None:
    if ok:
        assert positive_int(text) == int(text)
    else:
        with pytest.raises(argparse.ArgumentTypeError, match=f"at least 1, got {text}"):
            positive_int(text)


@pytest.mark.parametrize(
    ("scope", "kind"), [("Cluster", "ClusterKopfPeering"), ("Namespaced", "KopfPeering")]
)
def test_peering_crd_is_kopfs_shape_without_a_status_subresource(scope: str, kind: str) -> None:
    crd = crdgen.kopf_peering_crd(scope=scope)
    assert crd["metadata"]["name"] == f"{kind.lower()}s.kopf.dev"
    assert crd["spec"]["names"]["kind"] == kind
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1"
    # Kopf patches status on the object itself; a status subresource would drop its records.
    assert "subresources" not in version
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True
