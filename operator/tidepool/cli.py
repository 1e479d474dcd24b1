"""The ``tidepool`` command: one entry point, one sub-command per program.

Each program module exposes ``configure(parser)`` and ``run(args) -> int``; this file only
dispatches, importing a program when it is chosen so that ``tidepool crd`` does not load Kopf.

Bad command-line input ends with one line on stderr and exit code 2, never a usage dump or a
traceback: the argument types (:mod:`tidepool.sim.flags`) name the flag, the value and what is
allowed, and the parser prints argparse's own errors on one line.
"""

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn, Protocol, cast

#: sub-command -> (module, one-line help)
PROGRAMS: dict[str, tuple[str, str]] = {
    "run": ("tidepool.handlers.main", "run the operator (Kopf)"),
    "gateway": ("tidepool.gateway.app", "run the OpenAI-compatible gateway"),
    "engine-sim": ("tidepool.enginesim.program", "run the vLLM-like engine simulator"),
    "simulate": ("tidepool.sim.simulate", "replay a traffic trace through the policies"),
    "advise": ("tidepool.sim.advise", "recommend a mode and its monthly cost for a request log"),
    "crd": ("tidepool.api.generate", "write the CRDs and chart schema generated from the API"),
}


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``tidepool simulate: argument --dt: ...``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}\n")


class Program(Protocol):
    def configure(self, parser: argparse.ArgumentParser) -> None: ...
    def run(self, args: argparse.Namespace) -> int: ...


#: Packages of optional extras -> the extra that provides them.
EXTRAS: dict[str, str] = {"numpy": "sim", "matplotlib": "sim"}


def _load(module: str) -> Program:
    """Import a program; one line naming the extra to install when a package of one is missing
    (the container images leave the `sim` extra out)."""
    try:
        return cast(Program, importlib.import_module(module))
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        sys.stderr.write(
            f"tidepool: this command needs the '{extra}' extra ({exc.name} is missing):"
            f" pip install 'tidepool[{extra}]'\n"
        )
        raise SystemExit(2) from exc


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = OneLineParser(prog="tidepool", description=__doc__.splitlines()[0])
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in PROGRAMS.items():
        sub = subs.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            _load(module).configure(sub)
    args = parser.parse_args(argv)
    return _load(PROGRAMS[args.command][0]).run(args)


if __name__ == "__main__":
    raise SystemExit(main())
