"""Benchmark: every shared trace through ``tidepool simulate`` with the same defaults.

Prints, per trace, the comparison table and Tidepool auto's cost ratios against the best static
hybrid in hindsight (target <= 1.10), the reactive HPA/KEDA-like scaler, always-serverless and
always-dedicated, and whether each target and the p99 queue-wait SLO are met. Nothing is tuned per
trace. Run: ``.venv/bin/python e2e/bench/bench_simulate.py [--out DIR]``.
"""

import argparse
import sys
from pathlib import Path

from tidepool.sim import config, plots, simulate, traces

TRACES = Path(__file__).resolve().parents[3] / "shared" / "traces"
FILES = (
    TRACES / "azure_llm_2023" / "AzureLLMInferenceTrace_conv.csv",
    TRACES / "azure_llm_2023" / "AzureLLMInferenceTrace_code.csv",
    TRACES / "servegen_alibaba" / "servegen_mlarge_day0_subset.csv.gz",
    TRACES / "servegen_alibaba" / "servegen_client_rate_windows.csv.gz",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write PNG plots here")
    parser.add_argument("--traces", type=Path, default=TRACES)
    args = parser.parse_args()
    cfg = config.SimConfig()
    summary: list[str] = []
    for default in FILES:
        path = args.traces / default.relative_to(TRACES)
        if not path.exists():
            print(f"skip {path}: missing", file=sys.stderr)
            continue
        workload = traces.load(path, cfg.engine)
        cmp = simulate.compare(
            workload, cfg, progress=lambda m: print(m, file=sys.stderr, flush=True)
        )
        print(simulate.render(cmp, cfg))
        print()
        if args.out is not None:
            plots.draw(cmp.runs, args.out, workload.name)
        r, q = cmp.results, cmp.ratios
        auto = r["tidepool-auto"]
        checks = {
            "<=1.10x best static": q.vs_best_static <= 1.10,
            "<= serverless": q.vs_serverless <= 1.0,
            "<= dedicated": q.vs_dedicated <= 1.0,
            "p99 SLO": auto.meets_slo,
        }
        summary.append(
            f"{workload.name[:36]:<36} {q.vs_best_static:>7.3f} {q.vs_reactive:>8.3f}"
            f" {q.vs_serverless:>8.3f} {q.vs_dedicated:>8.3f} {auto.p99_wait_s:>6.0f}s  "
            + ", ".join(f"{k}: {'met' if ok else 'MISSED'}" for k, ok in checks.items())
        )
    print(
        f"{'trace':<36} {'/static':>7} {'/reactive':>8} {'/srvless':>8} {'/dedic.':>8}"
        f" {'p99':>7}  targets"
    )
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
