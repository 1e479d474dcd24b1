#!/opt/tidepool/bin/python
"""`vllm` inside the engine-sim image: runs the engine simulator for a `vllm serve` command line.

The operator runs engines as `vllm serve <model> --served-model-name <name> --port <port> ...`
(the command of vLLM's OpenAI server image). In the engine-sim image this file is `vllm`, so an
engine Deployment whose image is engine-sim runs the simulator unchanged on a real cluster
(kind, or any cluster without GPUs): the served name and port carry over, as do the vLLM flags
the simulator models (max-num-seqs and the LoRA ones); the rest are accepted and ignored.
"""

import os
import sys

#: vLLM flags the simulator takes too -> how many values follow (-1: every value up to the
#: next flag, as vLLM's nargs="+" --lora-modules).
KEPT = {
    "--max-num-seqs": 1,
    "--enable-lora": 0,
    "--max-loras": 1,
    "--max-cpu-loras": 1,
    "--max-lora-rank": 1,
    "--lora-modules": -1,
}


def translate(argv: list[str]) -> list[str]:
    """`serve MODEL [flags]` -> `tidepool engine-sim` arguments.

    E.g. ``["serve", "org/m", "--served-model-name", "m", "--port", "8000", "--dtype", "auto"]``
    gives ``["engine-sim", "--host", "0.0.0.0", "--port", "8000", "--model", "m"]``.
    """
    if not argv or argv[0] != "serve" or len(argv) < 2:
        sys.exit("vllm (engine-sim image): only `vllm serve MODEL [flags]` is supported")
    model, rest = argv[1], argv[2:]
    served, port, kept = model, "8000", []
    i = 0
    while i < len(rest):
        flag, _, inline = rest[i].partition("=")
        values: list[str] = [inline] if inline else []
        j = i + 1
        count = KEPT.get(flag, 1 if flag.startswith("--") else 0)
        if not inline:
            while j < len(rest) and (count < 0 or len(values) < count):
                if rest[j].startswith("--"):
                    break
                values.append(rest[j])
                j += 1
        if flag == "--served-model-name" and values:
            served = values[0]
        elif flag == "--port" and values:
            port = values[0]
        elif flag in KEPT:
            kept += [flag, *values]
        i = j
    return ["engine-sim", "--host", "0.0.0.0", "--port", port, "--model", served, *kept]


if __name__ == "__main__":
    args = translate(sys.argv[1:])
    os.execvp("tidepool", ["tidepool", *args])
