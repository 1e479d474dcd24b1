"""Trace loaders: turn the shared traces (and a user's request log) into per-tenant arrival series.

Role: the only module of the simulator that reads files. Everything downstream works on a
:class:`Workload`: for each tenant, per time step of ``dt`` seconds, how many requests arrived,
their input and output tokens, and their mean service time (how long a request holds a batch
seat, from the engine's capacity model).

Formats:

* **Request logs** (Azure LLM 2023, ``tidepool advise`` input): one row per request,
  ``TIMESTAMP,ContextTokens,GeneratedTokens`` or ``timestamp,input_tokens,output_tokens``.
  Timestamps are ISO date-times or plain seconds.
* **ServeGen** (Alibaba): per client, 600 s windows of ``rate_rps`` and the coefficient of
  variation of inter-arrival times. Arrivals per step are drawn from a gamma-Poisson
  (negative binomial) with the window's mean and variance ``cv^2 * mean`` (a renewal process with
  inter-arrival CV ``cv`` has count variance ~ ``cv^2`` times its mean), from a fixed seed.
  Token lengths come from ``servegen_client_token_windows.csv.gz`` next to it when present.

``scale`` multiplies demand: a request log's per-step arrivals and tokens (each request counts
``scale`` times, at the same instant and length), a ServeGen client's window rates (before the
arrivals are drawn, so the burstiness stays the trace's own).

Bad input raises :class:`TraceError` naming the file, the line, the field, the value and what is
allowed (not UTF-8, a number that does not parse, nan, infinity or a negative count), never a bare
Python exception: the programs print it as one line.

This module must not decide anything about scaling or cost; it only reads and bins.
"""

import argparse
import csv
import gzip
import io
import math
import sys
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, TypeVar

import numpy as np
import numpy.typing as npt

from tidepool.policy.capacity import EngineCapacity
from tidepool.sim import flags

FloatArray = npt.NDArray[np.float64]

#: Header names accepted for a request log, lower-cased.
TIME_COLUMNS: Final = ("timestamp", "time", "ts")
INPUT_COLUMNS: Final = ("contexttokens", "input_tokens", "prompt_tokens", "input")
OUTPUT_COLUMNS: Final = ("generatedtokens", "output_tokens", "completion_tokens", "output")
#: ServeGen's day 0 starts at 00:00; the date itself is anonymised.
SERVEGEN_EPOCH: Final = datetime(2025, 1, 1, tzinfo=UTC)
#: Token lengths when a ServeGen client has no token summary (the m-large median client).
DEFAULT_INPUT_TOKENS: Final = 1000.0
DEFAULT_OUTPUT_TOKENS: Final = 200.0


_T = TypeVar("_T")


class TraceError(ValueError):
    """A trace that cannot be read, with the file and what was wrong."""


def _number(text: str, field: str, where: str, *, positive: bool = False) -> float:
    """Parse one numeric field: finite and ``>= 0`` (``> 0`` when ``positive``).

    E.g. ``_number("211", "GeneratedTokens", "log.csv:2")`` is 211.0; ``"nan"``, ``"inf"``,
    ``"-3"`` and ``"abc"`` raise a :class:`TraceError` that names the field and the value.
    """
    try:
        return flags.finite_number(text, 0.0, strict=positive)
    except argparse.ArgumentTypeError as exc:
        raise TraceError(f"{where}: {field} {exc}") from None


def _guard(path: Path, read: Callable[[], _T]) -> _T:
    """Run ``read`` and turn encoding, compression and CSV errors into one-line TraceErrors."""
    try:
        return read()
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start : exc.start + 1].hex()
        raise TraceError(
            f"{path}: not UTF-8 text (byte 0x{bad} cannot be decoded); a trace must be a UTF-8"
            " CSV file, optionally gzip-compressed"
        ) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise TraceError(f"{path}: not a readable gzip file ({exc})") from None
    except csv.Error as exc:
        raise TraceError(f"{path}: not a readable CSV file ({exc})") from None


@dataclass(frozen=True, slots=True)
class TenantLoad:
    """One tenant's demand per step. Arrays have one entry per step.

    ``input_tokens`` and ``output_tokens`` are the step's totals (what the gateway's counters
    add up); ``service_s`` is the mean seconds one of the step's requests holds a batch seat.
    """

    name: str
    arrivals: FloatArray
    input_tokens: FloatArray
    output_tokens: FloatArray
    service_s: FloatArray

    @property
    def tokens(self) -> FloatArray:
        """Input plus output tokens per step."""
        return self.input_tokens + self.output_tokens

    @property
    def requests(self) -> float:
        return float(self.arrivals.sum())


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    dt: float
    start: datetime
    tenants: tuple[TenantLoad, ...]
    note: str = ""

    @property
    def steps(self) -> int:
        return len(self.tenants[0].arrivals) if self.tenants else 0

    @property
    def hours(self) -> float:
        return self.steps * self.dt / 3600.0


@dataclass(frozen=True, slots=True)
class RequestLog:
    """A per-request log: seconds since the first request, input and output tokens."""

    start: datetime
    offsets_s: FloatArray
    input_tokens: FloatArray
    output_tokens: FloatArray

    @property
    def duration_s(self) -> float:
        return float(self.offsets_s[-1]) if len(self.offsets_s) else 0.0


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return io.TextIOWrapper(path.open("rb"), encoding="utf-8")


def _column(header: list[str], names: tuple[str, ...], path: Path) -> int:
    low = [h.strip().lower() for h in header]
    for name in names:
        if name in low:
            return low.index(name)
    raise TraceError(f"{path}: no column named any of {', '.join(names)} (header: {header})")


def _parse_time(text: str) -> datetime:
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        seconds = None
    if seconds is not None:
        if not math.isfinite(seconds):
            raise ValueError(text)
        return SERVEGEN_EPOCH + timedelta(seconds=seconds)
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def read_request_log(path: Path) -> RequestLog:
    """Read a per-request CSV (Azure's header or ``timestamp,input_tokens,output_tokens``)."""
    return _guard(path, lambda: _read_request_log(path))


def _read_request_log(path: Path) -> RequestLog:
    with _open_text(path) as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise TraceError(f"{path}: empty file") from None
        it, ii, io_ = (
            _column(header, TIME_COLUMNS, path),
            _column(header, INPUT_COLUMNS, path),
            _column(header, OUTPUT_COLUMNS, path),
        )
        stamps: list[datetime] = []
        ins: list[float] = []
        outs: list[float] = []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            where = f"{path}:{line}"
            if len(row) <= max(it, ii, io_):
                raise TraceError(f"{where}: expected {len(header)} fields, got {row!r}")
            try:
                stamps.append(_parse_time(row[it]))
            except (ValueError, OverflowError):
                raise TraceError(
                    f"{where}: {header[it]} must be an ISO date-time or seconds, got {row[it]!r}"
                ) from None
            ins.append(_number(row[ii], header[ii], where))
            outs.append(_number(row[io_], header[io_], where))
    if not stamps:
        raise TraceError(f"{path}: no requests")
    order = np.argsort(np.array([s.timestamp() for s in stamps]), kind="stable")
    start = stamps[int(order[0])]
    offsets = np.array([(stamps[i] - start).total_seconds() for i in order], dtype=np.float64)
    return RequestLog(
        start=start,
        offsets_s=offsets,
        input_tokens=np.asarray(ins, dtype=np.float64)[order],
        output_tokens=np.asarray(outs, dtype=np.float64)[order],
    )


def tenant_load(
    name: str,
    cap: EngineCapacity,
    arrivals: FloatArray,
    input_tokens: FloatArray,
    output_tokens: FloatArray,
) -> TenantLoad:
    """A tenant's load from its per-step arrivals and token totals, with the mean service time.

    A request holds a seat for ``cap.service_seconds(input, output)``, which is linear in the
    tokens, so a step's mean request holds one for the service time of its mean tokens: on an H100
    8B engine, 2 requests of 1,155 + 211 tokens in a step (2,310 input and 422 output) each hold
    a seat 6.02 s. A step without arrivals has service time 0.
    """
    per_input, per_output = cap.service_seconds(1.0, 0.0), cap.service_seconds(0.0, 1.0)
    seat_seconds = input_tokens * per_input + output_tokens * per_output
    service = np.divide(seat_seconds, arrivals, out=np.zeros(len(arrivals)), where=arrivals > 0)
    return TenantLoad(name, arrivals, input_tokens, output_tokens, service)


def bin_log(
    log: RequestLog, cap: EngineCapacity, dt: float, name: str, hours: float | None = None
) -> TenantLoad:
    """Bin a request log into steps of ``dt`` seconds: arrivals, input and output tokens."""
    end = log.duration_s if hours is None else min(log.duration_s, hours * 3600.0)
    keep = log.offsets_s <= end
    steps = max(1, math.floor(end / dt) + 1)
    idx = np.minimum((log.offsets_s[keep] // dt).astype(np.int64), steps - 1)

    def per_step(weights: FloatArray | None = None) -> FloatArray:
        return np.bincount(idx, weights=weights, minlength=steps).astype(np.float64)

    return tenant_load(
        name,
        cap,
        per_step(),
        per_step(log.input_tokens[keep]),
        per_step(log.output_tokens[keep]),
    )


def scaled(load: TenantLoad, scale: float) -> TenantLoad:
    """``load`` with ``scale`` times the arrivals and tokens per step, service times unchanged.

    E.g. ×10 turns a step with 3 requests and 3,000 + 600 tokens into 30 requests and
    30,000 + 6,000 tokens.
    """
    if scale == 1.0:
        return load
    return TenantLoad(
        name=load.name,
        arrivals=load.arrivals * scale,
        input_tokens=load.input_tokens * scale,
        output_tokens=load.output_tokens * scale,
        service_s=load.service_s,
    )


def load_request_log(
    path: Path,
    cap: EngineCapacity,
    dt: float = 1.0,
    hours: float | None = None,
    scale: float = 1.0,
) -> Workload:
    log = read_request_log(path)
    tenant = scaled(bin_log(log, cap, dt, path.stem, hours), scale)
    times = f", demand x{scale:g}" if scale != 1.0 else ""
    return Workload(
        name=path.stem,
        dt=dt,
        start=log.start,
        tenants=(tenant,),
        note=f"{len(log.offsets_s):,} requests over {log.duration_s / 3600:.2f} h, one tenant"
        + times,
    )


@dataclass(frozen=True, slots=True)
class _Window:
    start_s: float
    length_s: float
    rate: float
    cv: float


_SERVEGEN_HEADER: Final = ["model_pool", "client_id", "window_start_s", "window_len_s", "rate_rps"]


def _servegen_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, row) of a ServeGen rate-window file, header checked."""
    with _open_text(path) as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or header[:5] != _SERVEGEN_HEADER:
            raise TraceError(f"{path}: not a ServeGen rate-window file (header {header})")
        yield from enumerate(reader, start=2)


def _window(row: list[str], where: str) -> _Window:
    """One ServeGen window, every number checked (an empty ``cv`` means 0: no arrivals)."""
    if len(row) < 5:
        raise TraceError(f"{where}: expected at least 5 fields, got {row!r}")
    cv = row[5] if len(row) > 5 and row[5].strip() else "0"
    return _Window(
        _number(row[2], "window_start_s", where),
        _number(row[3], "window_len_s", where, positive=True),
        _number(row[4], "rate_rps", where),
        _number(cv, "cv", where),
    )


def _token_means(path: Path) -> dict[tuple[str, str], list[tuple[float, float, float]]]:
    """(pool, client) -> [(window_start_s, mean input, mean output)] from the token summary."""
    out: dict[tuple[str, str], dict[float, list[float]]] = defaultdict(dict)
    if not path.exists():
        return {}
    with _open_text(path) as fh:
        reader = csv.reader(fh)
        next(reader, None)
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}"
            if len(row) < 5:
                raise TraceError(f"{where}: expected at least 5 fields, got {row!r}")
            pool, client, fld = row[0], row[1], row[3]
            start = _number(row[2], "window_start_s", where)
            mean = _number(row[4], "mean", where)
            slot = out[(pool, client)].setdefault(start, [DEFAULT_INPUT_TOKENS, 0.0])
            if fld == "input_tokens":
                slot[0] = mean
            elif fld == "output_tokens":
                slot[1] = mean
    return {
        key: sorted((s, v[0], v[1] or DEFAULT_OUTPUT_TOKENS) for s, v in windows.items())
        for key, windows in out.items()
    }


def load_servegen(
    path: Path,
    cap: EngineCapacity,
    *,
    dt: float = 5.0,
    top: int = 8,
    sample: int = 8,
    hours: float | None = 24.0,
    seed: int = 0,
    scale: float = 1.0,
) -> Workload:
    """The ``top`` busiest clients plus ``sample`` others drawn at random (fixed ``seed``).

    Why top-N plus a sample: the top 5 clients carry 43-77% of a pool's traffic and decide the
    cost; the sample keeps the idle majority (the median client is idle 93% of the time), which is
    what scale-to-zero and the shared pool are for. ``hours`` cuts the 14-day file to keep a run
    under two minutes on two cores.
    """
    limit_s = math.inf if hours is None else hours * 3600.0
    windows, volume = _servegen_windows(path, limit_s)
    if not windows:
        raise TraceError(f"{path}: no windows in the first {hours} h")
    rng = np.random.default_rng(seed)
    chosen = _choose_clients(volume, top, sample, rng)
    span = max(w.start_s + w.length_s for ws in windows.values() for w in ws)
    span = min(span, limit_s)
    steps = math.ceil(span / dt)
    tokens_path = path.with_name("servegen_client_token_windows.csv.gz")
    token_means = _token_means(tokens_path)
    tenants = []
    for key in chosen:
        arrivals = _sample_arrivals(windows[key], steps, dt, scale, rng)
        ins, outs = _step_token_means(token_means.get(key, []), steps, dt)
        tenants.append(
            tenant_load(f"{key[0]}/{key[1]}", cap, arrivals, arrivals * ins, arrivals * outs)
        )
    total = sum(volume.values())
    share = sum(volume[k] for k in chosen[:top]) / total if total else 0.0
    busiest = min(top, len(chosen))
    print(
        f"servegen: {len(windows)} clients in {span / 3600:.0f} h; simulating the busiest"
        f" {busiest} ({share:.0%} of requests) + {len(chosen) - busiest} sampled",
        file=sys.stderr,
    )
    times = f", demand x{scale:g}" if scale != 1.0 else ""
    return Workload(
        name=path.name.removesuffix(".csv.gz"),
        dt=dt,
        start=SERVEGEN_EPOCH,
        tenants=tuple(tenants),
        note=f"{len(chosen)} of {len(windows)} clients (top {top}: {share:.0%} of requests),"
        f" {span / 3600:.0f} h, dt {dt:g}s" + times,
    )


def _servegen_windows(
    path: Path, limit_s: float
) -> tuple[dict[tuple[str, str], list[_Window]], dict[tuple[str, str], float]]:
    """Each (pool, client)'s windows starting before ``limit_s``, and its requests in them (the
    volume that ranks the clients)."""
    windows: dict[tuple[str, str], list[_Window]] = defaultdict(list)
    volume: dict[tuple[str, str], float] = defaultdict(float)
    for line, row in _servegen_rows(path):
        w = _window(row, f"{path}:{line}")
        if w.start_s >= limit_s:
            continue
        key = (row[0], row[1])
        windows[key].append(w)
        volume[key] += w.rate * w.length_s
    return windows, volume


def _choose_clients(
    volume: dict[tuple[str, str], float], top: int, sample: int, rng: np.random.Generator
) -> list[tuple[str, str]]:
    """The ``top`` busiest clients (ties by name), then ``sample`` of the other clients that
    sent anything, drawn with ``rng`` and kept in rank order."""
    ranked = sorted(volume, key=lambda k: (-volume[k], k))
    chosen = ranked[:top]
    rest = [k for k in ranked[top:] if volume[k] > 0]
    if rest and sample > 0:
        picks = rng.choice(len(rest), size=min(sample, len(rest)), replace=False)
        chosen += [rest[int(i)] for i in sorted(picks)]
    return chosen


def _sample_arrivals(
    windows: list[_Window], steps: int, dt: float, scale: float, rng: np.random.Generator
) -> np.ndarray:
    """Requests per step drawn from the windows' mean rates (times ``scale``) and burstiness.

    ServeGen gives each window a rate and a coefficient of variation; a Gamma-Poisson draw keeps
    both: var = mu + mu^2/k = cv^2 mu, so k = mu / (cv^2 - 1) (plain Poisson when cv <= 1).
    """
    arrivals = np.zeros(steps)
    mean_rate = np.zeros(steps)
    var_factor = np.ones(steps)
    for w in windows:
        a = int(w.start_s // dt)
        b = min(steps, math.ceil((w.start_s + w.length_s) / dt))
        mean_rate[a:b] = w.rate * scale
        var_factor[a:b] = max(1.0, w.cv * w.cv)
    mu = mean_rate * dt
    busy = mu > 0
    over = busy & (var_factor > 1.0)
    lam = mu.copy()
    k = np.where(over, mu / np.maximum(var_factor - 1.0, 1e-9), 1.0)
    lam[over] = rng.gamma(shape=k[over], scale=mu[over] / k[over])
    arrivals[busy] = rng.poisson(lam[busy])
    return arrivals


def _step_token_means(
    means: list[tuple[float, float, float]], steps: int, dt: float
) -> tuple[np.ndarray, np.ndarray]:
    """Input and output tokens per request at every step. Only per-window means are known:
    each step's requests carry its window's means (the defaults before the first window)."""
    ins = np.full(steps, DEFAULT_INPUT_TOKENS)
    outs = np.full(steps, DEFAULT_OUTPUT_TOKENS)
    for s, mi, mo in means:
        a = int(s // dt)
        ins[a:] = mi
        outs[a:] = mo
    return ins, outs


def load(
    path: Path,
    cap: EngineCapacity,
    *,
    dt: float | None = None,
    hours: float | None = None,
    top: int = 8,
    sample: int = 8,
    seed: int = 0,
    scale: float = 1.0,
) -> Workload:
    """Pick the loader by file contents: a ServeGen rate file or a per-request log.

    Defaults: request logs at ``dt=1s`` over the whole log; ServeGen at ``dt=5s`` over 24 h.
    """

    def first_line() -> str:
        with _open_text(path) as fh:
            return str(fh.readline())

    if _guard(path, first_line).startswith("model_pool,"):
        return _guard(
            path,
            lambda: load_servegen(
                path,
                cap,
                dt=dt or 5.0,
                top=top,
                sample=sample,
                hours=24.0 if hours is None else hours,
                seed=seed,
                scale=scale,
            ),
        )
    return load_request_log(path, cap, dt=dt or 1.0, hours=hours, scale=scale)
