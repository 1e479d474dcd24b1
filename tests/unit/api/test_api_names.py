"""Rendered names and label values: always valid, stable, and never shared by two objects.

The API server accepts any DNS subdomain (253 characters, dots allowed, a leading digit) as an
InferenceDeployment's or GPUPool's name; what Tidepool renders from those names must still be a
valid Service name (an RFC 1035 label), Deployment name and label value, and two different
objects must never render the same one.
"""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidepool.api import labels, names

#: What the API server requires (Kubernetes' apimachinery validation: IsDNS1035Label for a
#: Service name, IsDNS1123Label for our Deployment names, IsValidLabelValue for label values).
DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
DNS_1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")

_label = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)
#: DNS subdomains as the API server accepts them for object names: dotted labels, up to 253.
subdomains = st.lists(_label, min_size=1, max_size=30).map(".".join).filter(lambda s: len(s) <= 253)
#: Long plain names too (a single label of up to 253 characters is a valid subdomain).
long_names = st.text(alphabet="ab-", min_size=60, max_size=253).map(
    lambda s: f"x{s.strip('-')}z".replace("--", "-")
)
object_names = subdomains | long_names | _label


def _valid(pattern: re.Pattern[str], value: str) -> bool:
    return len(value) <= 63 and pattern.fullmatch(value) is not None


@pytest.mark.parametrize(
    ("infd", "pool", "expected"),
    [
        pytest.param("llama", "shared-a100", "llama-shared-a100", id="readable"),
        pytest.param("8b", "shared-a100", "8b-shared-a100", id="leading-digit-is-fine"),
    ],
)
def test_engine_deployment_names_stay_readable(infd: str, pool: str, expected: str) -> None:
    assert names.engine_deployment(infd, pool) == expected


@pytest.mark.parametrize(
    ("infd", "pool"),
    [
        pytest.param("llama.v2", "shared-a100", id="dotted-name"),
        pytest.param("x" * 200, "shared-a100", id="long-name"),
        pytest.param("a-b", "c", id="dash-in-name"),
        pytest.param("sheng", "llama-8b", id="shared-engine-prefix"),
        pytest.param("a", "pool-0123abcd", id="looks-hashed"),
    ],
)
def test_engine_deployment_names_get_a_hash_when_needed(infd: str, pool: str) -> None:
    name = names.engine_deployment(infd, pool)

    assert _valid(DNS_1123_LABEL, name)
    assert re.search(r"-[0-9a-f]{8}$", name)


def test_colliding_names_render_distinct_deployments() -> None:
    """``a-b`` on pool ``c`` and ``a`` on pool ``b-c`` once both rendered ``a-b-c``."""
    assert names.engine_deployment("a-b", "c") != names.engine_deployment("a", "b-c")


def test_a_tenant_named_like_the_shared_engine_prefix_never_takes_a_fleet_name() -> None:
    assert names.engine_deployment("sheng", "llama-8b") != names.shared_engine("llama-8b")


@pytest.mark.parametrize(
    ("infd", "expected"),
    [
        pytest.param("llama", "llama-engine", id="readable"),
        pytest.param("support-bot", "support-bot-engine", id="dashes-are-unambiguous-here"),
    ],
)
def test_engine_service_names_stay_readable(infd: str, expected: str) -> None:
    assert names.engine_service(infd) == expected


@pytest.mark.parametrize(
    "infd",
    [
        pytest.param("llama.v2", id="dotted-name-is-not-a-service-name"),
        pytest.param("8b", id="leading-digit-is-not-a-service-name"),
        pytest.param("x" * 200, id="long-name"),
    ],
)
def test_engine_service_names_are_always_rfc_1035_labels(infd: str) -> None:
    assert _valid(DNS_1035_LABEL, names.engine_service(infd))


@pytest.mark.parametrize(
    ("infd", "expected"),
    [
        pytest.param("llama", "llama", id="short-name-as-is"),
        pytest.param("llama.v2", "llama.v2", id="dots-are-fine-in-a-label-value"),
        pytest.param("x" * 63, "x" * 63, id="exactly-63"),
    ],
)
def test_owner_label_is_the_name_when_it_fits(infd: str, expected: str) -> None:
    assert names.label_value(infd) == expected
    assert labels.selector_labels(infd)[labels.INFERENCE_DEPLOYMENT] == expected


def test_owner_label_of_a_long_name_is_cut_and_hashed() -> None:
    """A name over 63 characters was used as the label value, which the API server refuses."""
    long_a, long_b = "x" * 64, "x" * 63 + "y"

    value = labels.selector_labels(long_a)[labels.INFERENCE_DEPLOYMENT]

    assert _valid(LABEL_VALUE, value)
    assert value != names.label_value(long_b)


@given(infd=object_names, pool=object_names)
def test_rendered_names_are_always_valid(infd: str, pool: str) -> None:
    assert _valid(DNS_1123_LABEL, names.engine_deployment(infd, pool))
    assert _valid(DNS_1035_LABEL, names.engine_service(infd))
    assert _valid(DNS_1035_LABEL, names.shared_engine(infd))
    assert _valid(LABEL_VALUE, names.label_value(infd))
    assert _valid(LABEL_VALUE, names.shared_engine_label(infd))


@given(a=st.tuples(object_names, object_names), b=st.tuples(object_names, object_names))
def test_different_objects_never_share_a_rendered_name(
    a: tuple[str, str], b: tuple[str, str]
) -> None:
    if a != b:
        assert names.engine_deployment(*a) != names.engine_deployment(*b)
    if a[0] != b[0]:
        assert names.engine_service(a[0]) != names.engine_service(b[0])
        assert names.label_value(a[0]) != names.label_value(b[0])
        assert names.shared_engine(a[0]) != names.shared_engine(b[0])
    assert names.engine_deployment(*a) != names.shared_engine(b[0])


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param(("a-b", "c"), ("a", "b-c"), id="split-moves-across-the-dash"),
        pytest.param(("x" * 60, "p"), ("x" * 60, "q"), id="long-names-differ-in-the-cut"),
        pytest.param(("a.b", "c"), ("a-b", "c"), id="dot-versus-dash"),
    ],
)
def test_known_near_misses_stay_apart(a: tuple[str, str], b: tuple[str, str]) -> None:
    assert names.engine_deployment(*a) != names.engine_deployment(*b)


def test_a_readable_name_never_equals_a_hashed_one() -> None:
    """A pool named after another pair's hashed form cannot take that pair's Deployment."""
    hashed = names.engine_deployment("a-b", "x")
    lookalike_pool = hashed.removeprefix("a-")

    assert names.engine_deployment("a", lookalike_pool) != hashed
