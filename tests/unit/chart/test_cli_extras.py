"""A command whose optional extra is missing says which extra to install (the images carry no
`sim` extra), instead of an ImportError traceback."""

import sys

import pytest

from tidepool import cli


@pytest.mark.parametrize("missing", ["numpy", "matplotlib"])
def test_missing_sim_extra_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], missing: str
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # import fails as if not installed
    for module in [m for m in sys.modules if m.startswith("tidepool.sim")]:
        monkeypatch.delitem(sys.modules, module)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["simulate", "--help"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"needs the 'sim' extra ({missing} is missing)" in err
    assert "pip install 'tidepool[sim]'" in err


def test_other_import_errors_are_not_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    for module in [m for m in sys.modules if m.startswith("tidepool.enginesim")]:
        monkeypatch.delitem(sys.modules, module)
    with pytest.raises(ImportError):
        cli.main(["engine-sim", "--help"])
