"""Key file parsing, hashed keys, reloads, bearer tokens and the per-tenant token bucket split
over the gateway's replicas."""

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidepool.gateway import auth


def _sha(key):
    return auth.HASHED_PREFIX + hashlib.sha256(key.encode()).hexdigest()


@pytest.mark.parametrize(
    ("document", "match"),
    [
        pytest.param([], "expected a mapping", id="not-a-mapping"),
        pytest.param({"k1": "acme"}, "expected a mapping with tenant", id="entry-not-mapping"),
        pytest.param(
            {"k1": {"tenant": ""}}, "tenant must be a non-empty string", id="empty-tenant"
        ),
        pytest.param(
            {"k1": {"tenant": "a", "requestsPerMinute": 0}},
            "requestsPerMinute must be an integer >= 1",
            id="zero-rpm",
        ),
        pytest.param(
            {"k1": {"tenant": "a", "requestsPerMinute": 5}, "k2": {"tenant": "a"}},
            "must agree",
            id="conflicting-tenant-limits",
        ),
        pytest.param(
            {"sha256:abc": {"tenant": "a"}},
            "entry 1: after 'sha256:' the key must be 64 lowercase hex digits",
            id="short-digest",
        ),
        pytest.param(
            {_sha("k1").upper().replace("SHA256:", "sha256:"): {"tenant": "a"}},
            "64 lowercase hex digits",
            id="uppercase-digest",
        ),
        pytest.param(
            {"k1": {"tenant": "a"}, _sha("k1"): {"tenant": "a"}},
            "entry 2 .*listed twice",
            id="plain-and-hashed-twice",
        ),
        pytest.param({7: {"tenant": "a"}}, "entry 1: the key must be a non-empty string", id="int"),
    ],
)
def test_bad_key_files_name_the_problem(document, match):
    with pytest.raises(auth.KeyFileError, match=match):
        auth.KeyRing.parse(document)


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(
            {"keys": {"sk-1": {"tenant": "acme", "requestsPerMinute": 60}}}, id="keys-wrapper"
        ),
        pytest.param({"sk-1": {"tenant": "acme", "requestsPerMinute": 60}}, id="top-level-mapping"),
    ],
)
def test_key_file_forms(document):
    ring = auth.KeyRing.parse(document)
    assert ring.lookup("sk-1") == auth.TenantKey("acme", 60)
    assert ring.lookup("sk-2") is None
    assert ring.lookup(None) is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param("Bearer sk-1", "sk-1", id="bearer"),
        pytest.param("bearer  sk-1 ", "sk-1", id="case-and-spaces"),
        pytest.param("Basic abc", None, id="other-scheme"),
        pytest.param("Bearer ", None, id="empty"),
        pytest.param(None, None, id="missing"),
    ],
)
def test_bearer_token(header, expected):
    assert auth.bearer_token(header) == expected


def test_bucket_allows_burst_then_refills_at_rate():
    # rpm=60: 60 pass at once, the 61st waits; after 0.5 s none is back, after 1 s one is.
    limiter = auth.RateLimiter()
    assert all(limiter.check("acme", 60, 0.0) is None for _ in range(60))
    wait = limiter.check("acme", 60, 0.0)
    assert wait == pytest.approx(1.0)
    assert limiter.check("acme", 60, 0.5) == pytest.approx(0.5)
    assert limiter.check("acme", 60, 1.0) is None
    assert auth.retry_after_header(0.2) == "1"
    assert auth.retry_after_header(1.01) == "2"


def test_no_limit_and_tenants_independent():
    limiter = auth.RateLimiter()
    assert all(limiter.check("free", None, 0.0) is None for _ in range(1000))
    assert limiter.check("a", 1, 0.0) is None
    assert limiter.check("a", 1, 0.0) is not None
    assert limiter.check("b", 1, 0.0) is None


@pytest.mark.parametrize(
    "entry",
    [pytest.param("sk-acme-secret", id="plain"), pytest.param(_sha("sk-acme-secret"), id="hashed")],
)
def test_a_key_is_found_by_its_digest_whether_given_plain_or_hashed(entry):
    ring = auth.KeyRing.parse({"keys": {entry: {"tenant": "acme", "requestsPerMinute": 60}}})
    assert ring.lookup("sk-acme-secret") == auth.TenantKey("acme", 60)
    assert ring.lookup(_sha("sk-acme-secret")) is None  # the digest itself is no key
    assert ring.lookup("sk-acme-secre") is None


def test_errors_name_the_entry_by_position_digest_and_tenant_never_the_key():
    with pytest.raises(auth.KeyFileError) as err:
        auth.KeyRing.parse(
            {"sk-good": {"tenant": "a"}, "sk-topsecret": {"tenant": "b", "requestsPerMinute": -1}}
        )
    message = str(err.value)
    digest = hashlib.sha256(b"sk-topsecret").hexdigest()
    assert f"api key entry 2 (sha256:{digest[:12]}…), tenant 'b': requestsPerMinute" in message
    assert "topsecret" not in message


def test_a_yaml_error_says_where_without_quoting_the_line():
    with pytest.raises(auth.KeyFileError, match="not valid YAML at line 3, column 1") as err:
        auth.parse_key_file(b"keys:\n  sk-topsecret: {tenant: [a\n")
    assert "topsecret" not in str(err.value)


def _write(path, text):
    path.write_text(text, encoding="utf-8")


ACME = "keys:\n  sk-acme: {tenant: acme, requestsPerMinute: 60}\n"
BETA = "keys:\n  sk-beta: {tenant: beta}\n"


def test_reload_swaps_the_ring_only_for_good_new_content(tmp_path):
    """Good file: replaced. Malformed: the old keys stay, the error names entry and field,
    and it is reported once. Deleted: the old keys stay. Restored: loaded again."""
    path = tmp_path / "api-keys.yaml"
    _write(path, ACME)
    keys = auth.KeyFile(path)
    assert keys.ring.lookup("sk-acme") == auth.TenantKey("acme", 60)
    assert keys.reload().outcome is auth.Reload.UNCHANGED

    _write(path, BETA)
    got = keys.reload()
    assert (got.outcome, got.reason) == (auth.Reload.RELOADED, "loaded 1 keys")
    assert got.ring is keys.ring
    assert keys.ring.lookup("sk-acme") is None
    assert keys.ring.lookup("sk-beta") == auth.TenantKey("beta", None)

    _write(
        path,
        "keys:\n  sk-beta: {tenant: beta}\n  sk-gamma: {tenant: gamma, requestsPerMinute: lots}\n",
    )
    got = keys.reload()
    assert got.outcome is auth.Reload.REJECTED
    assert got.ring is None
    assert "api key entry 2" in got.reason
    assert "tenant 'gamma': requestsPerMinute" in got.reason
    assert got.reason.endswith("keeping the keys last loaded")
    assert keys.ring.lookup("sk-beta") is not None
    assert keys.reload().outcome is auth.Reload.UNCHANGED  # the same bad file: said once

    path.unlink()
    got = keys.reload()
    assert got.outcome is auth.Reload.MISSING
    assert keys.ring.lookup("sk-beta") is not None
    assert keys.reload().outcome is auth.Reload.UNCHANGED

    _write(path, "keys: {}\n")  # how every key is revoked
    assert keys.reload().outcome is auth.Reload.RELOADED
    assert len(keys.ring) == 0
    assert keys.ring.lookup("sk-beta") is None


def test_reload_follows_the_kubelets_symlink_swap(tmp_path):
    """A Secret volume: ``api-keys.yaml -> ..data/api-keys.yaml``, ``..data -> ..<timestamp>``;
    an update writes a new timestamped directory and renames a new ``..data`` link over the
    old one, so the file's path never changes and never reads half-written."""

    def publish(version, text):
        directory = tmp_path / f"..2026_12_02_{version}"
        directory.mkdir()
        _write(directory / "api-keys.yaml", text)
        os.symlink(directory.name, tmp_path / "..data_tmp")
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")

    publish(1, ACME)
    os.symlink("..data/api-keys.yaml", tmp_path / "api-keys.yaml")
    keys = auth.KeyFile(tmp_path / "api-keys.yaml")
    assert keys.ring.lookup("sk-acme") is not None
    publish(2, BETA)
    assert keys.reload().outcome is auth.Reload.RELOADED
    assert keys.ring.lookup("sk-acme") is None
    assert keys.ring.lookup("sk-beta") is not None


@pytest.mark.parametrize(
    ("content", "match"),
    [
        pytest.param(None, "does not exist", id="missing"),
        pytest.param("keys: [sk-1]\n", "expected a mapping", id="malformed"),
    ],
)
def test_the_first_load_refuses_what_a_reload_would_keep_out(tmp_path, content, match):
    path = tmp_path / "api-keys.yaml"
    if content is not None:
        _write(path, content)
    with pytest.raises(auth.KeyFileError, match=match):
        auth.KeyFile(path)


# ---- the limit over several replicas ----------------------------------------------------


@pytest.mark.parametrize(
    ("rpm", "replicas", "share"),
    [(600, 1, 600.0), (600, 3, 200.0), (600, 4, 150.0), (100, 3, 100 / 3), (600, 0, 600.0)],
)
def test_replica_share(rpm, replicas, share):
    assert auth.replica_share(rpm, replicas) == pytest.approx(share)


def test_600_rpm_over_3_replicas_is_200_each_then_one_every_0_3s():
    limiter = auth.RateLimiter()
    assert all(limiter.check("acme", 600, 0.0, replicas=3) is None for _ in range(200))
    assert limiter.check("acme", 600, 0.0, replicas=3) == pytest.approx(0.3)
    assert limiter.check("acme", 600, 0.3, replicas=3) is None
    assert limiter.check("acme", 600, 0.3, replicas=3) is not None


def test_a_replica_joining_mid_window():
    """600 rpm on 2 replicas (300 each), both spent at t=0. At t=30 s a third turns ready:
    the old two are credited the 30 s at the new share's rate (200/60 per s: 100 each, one
    bucket's rate for the time is never more than the old one's) and the new one starts with
    its full 200. The window [0, 30 s] admits 600 + 400 = 1000 where one replica would admit
    600 + 300 = 900: a join grants at most one share (200) beyond the limit, once."""
    old = [auth.RateLimiter(), auth.RateLimiter()]
    burst = sum(1 for lim in old for _ in range(400) if lim.check("acme", 600, 0.0, 2) is None)
    assert burst == 600
    new = auth.RateLimiter()
    after_join = [
        sum(1 for _ in range(400) if lim.check("acme", 600, 30.0, 3) is None) for lim in [*old, new]
    ]
    assert after_join == [100, 100, 200]
    assert burst + sum(after_join) == 1000 <= 600 + 300 + auth.replica_share(600, 3)


def _admitted_round_robin(rpm, replicas, seconds):
    """A tenant that asks for 3x its limit, round-robin over ``replicas`` limiters: 2x its
    burst at t=0, then three times its rate until ``seconds``."""
    limiters = [auth.RateLimiter() for _ in range(replicas)]
    times = [0.0] * (2 * rpm)
    later = int(3 * rpm * seconds / 60)
    times += [seconds * (i + 1) / later for i in range(later)]
    return sum(
        1
        for i, now in enumerate(times)
        if limiters[i % replicas].check("acme", rpm, now, replicas) is None
    )


@settings(max_examples=60, deadline=None)
@given(
    replicas=st.integers(1, 12),
    per_replica=st.integers(10, 100),
    seconds=st.floats(0.0, 60.0),
)
def test_round_robin_over_any_replica_count_holds_the_limit_within_10_percent(
    replicas, per_replica, seconds
):
    """The tenant's limit for a window is its burst plus its rate over the window. Split over
    the replicas the total never passes it (the shares sum to the limit), and falls short by
    less than one token per replica, under 10% while each share is 10 or more."""
    rpm = replicas * per_replica
    limit = rpm + rpm * seconds / 60
    admitted = _admitted_round_robin(rpm, replicas, seconds)
    assert admitted <= limit + 1e-6
    assert admitted > limit - replicas - 1
    assert abs(admitted - limit) <= 0.1 * limit


def test_unsplit_replicas_multiply_the_limit():
    """The defect: each replica with the whole limit (replicas=1 on 2 replicas) admits twice."""
    limiters = [auth.RateLimiter(), auth.RateLimiter()]
    admitted = sum(1 for i in range(400) if limiters[i % 2].check("acme", 100, 0.0) is None)
    assert admitted == 200
