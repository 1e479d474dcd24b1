"""Key file parsing, bearer tokens and the per-tenant token bucket."""

import pytest

from tidepool.gateway import auth


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
