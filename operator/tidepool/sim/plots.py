"""PNG plots of a comparison: traffic, replicas per pool, cumulative GPU spend over time.

Role: draw; nothing else. Uses matplotlib's non-interactive Agg backend, so it runs on a server
and in CI without a display.

This module must not simulate or compute costs; it reads finished runs.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from tidepool.sim.engine import TenantRun

if TYPE_CHECKING:
    from tidepool.sim.shared_compare import PoolComparison

_MAX_POINTS = 2000


def _thin(values: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Downsample by block means to at most ``_MAX_POINTS`` points; x in hours."""
    step = max(1, len(values) // _MAX_POINTS)
    usable = len(values) // step * step
    y = values[:usable].reshape(-1, step).mean(axis=1) if usable else values
    x = np.arange(len(y)) * step * dt / 3600.0
    return x, y


def _sum(runs: Sequence[TenantRun], attr: str, cumulative: bool = False) -> np.ndarray:
    """Sum a timeline over tenants. Runs drain for different times after the trace, so shorter
    ones are padded: with zeros, or with their last value for a ``cumulative`` timeline.

    E.g. ``[1, 2]`` and ``[1, 2, 3]`` sum to ``[2, 4, 3]``; cumulative, to ``[2, 4, 5]``.
    """
    arrays = [np.asarray(getattr(r, attr), dtype=np.float64) for r in runs]
    size = max((len(a) for a in arrays), default=0)
    total = np.zeros(size)
    for a in arrays:
        total[: len(a)] += a
        if cumulative and 0 < len(a) < size:
            total[len(a) :] += a[-1]
    return total


def draw(runs: Mapping[str, Sequence[TenantRun]], out_dir: Path, trace: str) -> list[Path]:
    """Write ``<trace>_traffic.png``, ``<trace>_replicas.png`` and ``<trace>_cost.png`` (spend)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    auto = runs["tidepool-auto"]
    dt = auto[0].dt

    fig, ax = plt.subplots(figsize=(10, 3.5))
    x, y = _thin(_sum(auto, "demand_timeline"), dt)
    ax.plot(x, y, lw=0.8)
    ax.set(
        xlabel="hours",
        ylabel="in flight (running + waiting)",
        title=f"{trace}: traffic (tidepool-auto)",
    )
    written.append(out_dir / f"{trace}_traffic.png")
    fig.tight_layout()
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    for ax, name in zip(axes, ("tidepool-auto", "reactive-keda-hpa"), strict=True):
        if name not in runs:
            continue
        for attr, label in (("shared_timeline", "shared"), ("dedicated_timeline", "dedicated")):
            x, y = _thin(_sum(runs[name], attr), dt)
            ax.plot(x, y, lw=0.9, label=f"{label} pool")
        ax.set(ylabel="replicas", title=name)
        ax.legend(loc="upper right")
    axes[-1].set_xlabel("hours")
    written.append(out_dir / f"{trace}_replicas.png")
    fig.tight_layout()
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 4))
    for name, group in runs.items():
        x, y = _thin(_sum(group, "spend_timeline", cumulative=True), dt)
        ax.plot(x, y, lw=1.0, label=name)
    ax.set(
        xlabel="hours",
        ylabel="cumulative GPU spend ($)",
        title=f"{trace}: cumulative GPU spend (chargeback not included)",
    )
    ax.legend(loc="upper left", fontsize=8)
    written.append(out_dir / f"{trace}_cost.png")
    fig.tight_layout()
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    return written


def draw_shared(cmp: "PoolComparison", out_dir: Path, trace: str) -> list[Path]:
    """Write ``<trace>_<pool>_shared.png``: the SharedEngine fleet's replicas over time (all on
    the fleet, and with auto promotions) and each alternative's spend, whole pool and long tail.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6))
    for name, fleet in cmp.fleets.items():
        x, y = _thin(np.asarray(fleet.replicas_timeline, dtype=np.float64), fleet.dt)
        top.plot(x, y, lw=0.9, label=f"{name} fleet")
    top.set(xlabel="hours", ylabel="fleet replicas", title=f"{trace} / {cmp.pool}: SharedEngine")
    top.legend(loc="upper right", fontsize=8)
    names = list(cmp.runs)
    whole = [cmp.spend(n) for n in names]
    tail = [cmp.spend(n, cmp.tail) for n in names]
    at = np.arange(len(names))
    bottom.bar(at - 0.2, whole, 0.4, label="whole pool")
    bottom.bar(at + 0.2, tail, 0.4, label=f"long tail ({len(cmp.tail)} tenants)")
    bottom.axhline(cmp.bound, color="grey", lw=0.8, ls="--", label="per-minute lower bound")
    bottom.set_xticks(at, names)
    bottom.set(ylabel="GPU spend ($)")
    bottom.legend(loc="upper right", fontsize=8)
    path = out_dir / f"{trace}_{cmp.pool.replace('/', '_')}_shared.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
