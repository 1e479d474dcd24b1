"""The body of a server-side apply carries text as it is.

The kubernetes client serialises with ``json.dumps``, which writes an emoji as the surrogate pair
``\\ud83e\\udd99``; apply patches are parsed as YAML by the API server, whose parser refuses such
an escape, so a spec with an emoji never got its children (a traceback every 10 s). The
integration test tests/integration/test_spec_hardening.py sends these bodies to the API server.
"""

import json

import pytest

from tidepool.adapters import kube

OBJ = {"metadata": {"name": "m"}, "args": ["llama 🦙", "naïve", "日本語", "tab\there"]}


def test_non_ascii_text_is_sent_as_utf8_not_surrogate_escapes() -> None:
    body = kube.apply_body(OBJ)

    assert "🦙".encode() in body
    assert b"\\ud83e" not in body
    assert json.loads(body) == OBJ


@pytest.mark.parametrize(
    "char",
    [
        pytest.param("\x7f", id="delete"),
        pytest.param("\x85", id="next-line-is-a-yaml-1.1-line-break"),
        pytest.param("\u2028", id="line-separator-is-a-yaml-1.1-line-break"),
        pytest.param("\u2029", id="paragraph-separator-is-a-yaml-1.1-line-break"),
        pytest.param("\x9f", id="c1-control"),
        pytest.param("\ufeff", id="byte-order-mark"),
        pytest.param("\ufffe", id="non-character"),
        pytest.param("\x00", id="nul"),
    ],
)
def test_characters_yaml_may_not_hold_raw_stay_escaped(char: str) -> None:
    obj = {"value": f"a{char}b"}

    body = kube.apply_body(obj)

    assert char.encode() not in body
    assert json.loads(body) == obj
