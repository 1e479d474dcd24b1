"""Benchmark: what the gateway adds per request, and how many requests/s it passes on one core.

Starts one engine simulator (short latencies) and one gateway (``--static-routes``, so no
cluster) as subprocesses on 127.0.0.1, the gateway pinned to one CPU with
``os.sched_setaffinity``. Then:

1. latency: N sequential requests, alternating direct-to-engine and through-gateway, so both
   see the same machine state; prints p50/p99 of each, the added milliseconds and the ratio
   gateway/direct from the same run;
2. the same pairing for a LoRA tenant: direct asks the engine for the adapter by its name, via
   the gateway asks for the tenant's served name, which the gateway rewrites to the adapter's
   (and back in the response), as it does for tenants of a SharedEngine;
3. throughput: C concurrent clients for T seconds through the gateway (and, for reference,
   direct), prints requests/second.

Prints figures only; asserts nothing about time (machines differ). Loopback only.
Run: ``.venv/bin/python e2e/bench/bench_gateway.py [--requests 400] [--seconds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import stack

ROOT = Path(__file__).resolve().parents[2]
BODY = {"model": "bench", "prompt": "hello world", "max_tokens": 4}
#: The LoRA arm: the tenant's served name at the gateway, the adapter's name at the engine.
TENANT, ADAPTER = "bench-tenant", "bench-adapter"


def _pin(cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})


@contextlib.contextmanager
def _process(args: list[str], cpu: int | None) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidepool", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=(lambda: _pin(cpu)) if cpu is not None else None,  # noqa: PLW1509
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _wait_ok(session: aiohttp.ClientSession, url: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url) as r:
                if r.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


async def _one(session: aiohttp.ClientSession, url: str, model: str = "bench") -> float:
    t0 = time.perf_counter()
    async with session.post(url, json={**BODY, "model": model}) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"{url} ({model}): HTTP {r.status}")
    return time.perf_counter() - t0


async def _paired(
    session: aiohttp.ClientSession, direct: tuple[str, str], via: tuple[str, str], n: int
) -> tuple[list[float], list[float]]:
    """``n`` requests each way, alternating, so both see the same machine state."""
    d_lat: list[float] = []
    g_lat: list[float] = []
    for _ in range(n):
        d_lat.append(await _one(session, *direct))
        g_lat.append(await _one(session, *via))
    return d_lat, g_lat


def _report(title: str, d_lat: list[float], g_lat: list[float]) -> None:
    ms = 1000.0
    print(f"{title}: {len(d_lat)} sequential requests per path")
    for name, p in (("p50", 50), ("p99", 99)):
        d, g = _pct(d_lat, p), _pct(g_lat, p)
        print(
            f"  {name}: direct {d * ms:7.2f} ms   via gateway {g * ms:7.2f} ms"
            f"   added {(g - d) * ms:6.2f} ms   ratio {g / d:5.2f}x"
        )
    added = [g - d for g, d in zip(g_lat, d_lat, strict=True)]
    print(
        f"  per-request added latency (paired): p50 {_pct(added, 50) * ms:.2f} ms,"
        f" p99 {_pct(added, 99) * ms:.2f} ms, mean {statistics.fmean(added) * ms:.2f} ms"
    )


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def _throughput(url: str, clients: int, seconds: float) -> float:
    done = 0
    end = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < end:
                await _one(session, url)
                done += 1

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return done / (time.monotonic() - t0)


async def bench(args: argparse.Namespace) -> None:
    engine_port, gw_port, metrics_port = stack.free_port(), stack.free_port(), stack.free_port()
    cpus = sorted(os.sched_getaffinity(0))
    gw_cpu, engine_cpu = cpus[0], cpus[-1]
    with tempfile.TemporaryDirectory() as tmp:
        routes = Path(tmp) / "routes.yaml"
        routes.write_text(
            "models:\n  - name: bench\n    endpoints:\n"
            f"      - {{host: 127.0.0.1, port: {engine_port}, pool: shared}}\n"
            f"  - name: {TENANT}\n    adapter: {ADAPTER}\n    endpoints:\n"
            f"      - {{host: 127.0.0.1, port: {engine_port}, pool: shared}}\n"
        )
        engine_args = [
            "engine-sim", "--host", "127.0.0.1", "--port", str(engine_port), "--model", "bench",
            "--load-delay", "0s", "--prefill-ms-per-1k-tokens", "1", "--decode-ms-per-token",
            str(args.decode_ms), "--max-num-seqs", "256", "--log-level", "WARNING",
            "--enable-lora", "--lora-modules", f"{ADAPTER}={tmp}/{ADAPTER}",
        ]  # fmt: skip
        gw_args = [
            "gateway", "--host", "127.0.0.1", "--port", str(gw_port), "--metrics-port",
            str(metrics_port), "--static-routes", str(routes), "--log-level", "WARNING",
        ]  # fmt: skip
        with _process(engine_args, engine_cpu), _process(gw_args, gw_cpu):
            direct = f"http://127.0.0.1:{engine_port}/v1/completions"
            via = f"http://127.0.0.1:{gw_port}/v1/completions"
            async with aiohttp.ClientSession() as session:
                await _wait_ok(session, f"http://127.0.0.1:{engine_port}/health")
                await _wait_ok(session, f"http://127.0.0.1:{gw_port}/readyz")
                # Warm up connections and code paths.
                await _paired(session, (direct, "bench"), (via, "bench"), 50)
                await _paired(session, (direct, ADAPTER), (via, TENANT), 50)
                base = await _paired(session, (direct, "bench"), (via, "bench"), args.requests)
                lora = await _paired(session, (direct, ADAPTER), (via, TENANT), args.requests)
            d_rps = await _throughput(direct, args.clients, args.seconds)
            g_rps = await _throughput(via, args.clients, args.seconds)

    print(
        f"engine-sim: decode {args.decode_ms} ms/token, max_tokens {BODY['max_tokens']};"
        f" gateway pinned to CPU {gw_cpu}, engine to CPU {engine_cpu}; {len(cpus)} CPUs"
    )
    _report("base model", *base)
    _report(f"LoRA tenant ({TENANT} -> adapter {ADAPTER}, model rewritten both ways)", *lora)
    print(f"throughput, {args.clients} concurrent clients, {args.seconds:g}s each:")
    print(f"  direct to engine: {d_rps:8.1f} req/s")
    print(f"  via gateway (1 core): {g_rps:8.1f} req/s   ({g_rps / d_rps:.2f}x of direct)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--decode-ms", type=float, default=0.5)
    args = parser.parse_args()
    asyncio.run(bench(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
