"""Which tenant's waiting request a SharedEngine serves first: the gateway's and the simulator's
one rule.

Role: :func:`priority` gives a LoRA tenant's request its place in a fleet replica's waiting
queue. The gateway sends it as the request's ``priority`` to replicas that run vLLM's priority
scheduling (``--scheduling-policy priority``: lower values are scheduled first, ties in arrival
order; vLLM PR #5958); the fleet simulator (:mod:`tidepool.sim.shared`) admits its held requests
in the same order. Both call this function, so the simulated queue is the engine's.

The rule, two classes: a request's priority is :data:`WITHIN_SHARE` (0) while its tenant's
requests in flight on the fleet (running or waiting) are within its fair share of the fleet's
seats, and :data:`BEYOND_SHARE` (1) beyond it (:func:`priority`). The fair share is the seats of
the fleet's ready replicas over the tenants with requests in flight there (:func:`fair_share`).
So a tenant within its share is never queued behind one beyond it, and among the tenants beyond
theirs (or within) the order stays first come, first served.

Why: vLLM's default queue is first come, first served, and the fleet is shared. A tenant that
sends 1,000 requests in one second (ServeGen's m-large pool has one that does so 26 times in six
hours) fills every seat and the queue behind them, and every other tenant's request waits until
that burst has been served and the fleet has added replicas (a model load, 60 s). Why two
classes and not the count itself: ordered by each tenant's count (or its logarithm), the
heaviest tenant goes last whenever the fleet is busy and starves (on the same six hours, one
tenant each in ServeGen's m-mid and m-small pools went from within the 10 s p99 SLO to 15 s and
70 s); beyond its share a tenant keeps its place in arrival order among the others beyond
theirs.

Measured (ServeGen's five model pools, 6 hours, every client a LoRA tenant, ``tidepool simulate
--shared-engines``): tenants within the 10 s p99 queue wait, first come, first served against
this rule: m-large 55/60 -> 59/60 (the one left is the burst's own tenant, 25 s either way),
m-mid 67/67 both, m-small 22/22 both, deepseek-r1 29/29 both, mm-image 24/24 both; the fleets
spend the same (m-large $1,262 -> $1,261).

E.g. 3 replicas of 64 seats and 4 tenants with requests in flight: a share of 48 each. A tenant
with 900 in flight sends priority 1, one with 30 sends 0, and vLLM runs the 30's next request
before any of the 900's that are waiting. Counted per gateway replica, each replica sees its
part of every tenant's requests, so it compares them with its part of the seats
(:func:`fair_share` divides by the gateway replicas).

Must not: read the clock, do I/O, or import anything beyond the standard library.
"""

from collections.abc import Sequence
from typing import Final

#: vLLM's ``--scheduling-policy`` value the rule needs on a SharedEngine's replicas.
SCHEDULING_POLICY: Final = "priority"
#: vLLM's default, under which it refuses any request whose ``priority`` is not 0 (HTTP 400).
FCFS: Final = "fcfs"
_FLAG: Final = "--scheduling-policy"
#: The flags a SharedEngine's replicas are rendered with, before the user's ``extraArgs``.
RENDERED_ARGS: Final = (_FLAG, SCHEDULING_POLICY)


def scheduling_policy(args: Sequence[str]) -> str:
    """The scheduling policy a ``vllm serve`` command line runs: the last ``--scheduling-policy``
    value (``X`` after the flag, or ``--scheduling-policy=X``), as argparse keeps the last;
    :data:`FCFS` without one. E.g. the fleet's rendered ``... --scheduling-policy priority``
    followed by a user's ``extraArgs: [--scheduling-policy=fcfs]`` runs ``fcfs``."""
    policy = FCFS
    for k, arg in enumerate(args):
        if arg == _FLAG and k + 1 < len(args):
            policy = args[k + 1]
        elif arg.startswith(_FLAG + "="):
            policy = arg.removeprefix(_FLAG + "=")
    return policy


#: The priority of a request whose tenant is within its fair share: vLLM's default.
WITHIN_SHARE = 0
#: The priority of a request whose tenant is beyond its fair share: served after every request
#: of a tenant within its share.
BEYOND_SHARE = 1


def rendered_policy(extra_args: Sequence[str]) -> str:
    """The scheduling policy a SharedEngine's replicas run once its spec is rolled out: the
    rendered ``--scheduling-policy priority`` unless the user's ``extraArgs`` (which come last)
    say otherwise. E.g. ``[]``: ``priority``; ``["--scheduling-policy", "fcfs"]``: ``fcfs``."""
    return scheduling_policy([*RENDERED_ARGS, *extra_args])


def fair_share(seats: float, tenants_in_flight: int, gateways: int = 1) -> float:
    """Requests in flight one tenant may have on the fleet before it is beyond its share: the
    seats of the fleet's ready replicas over the tenants with requests in flight there, and over
    the gateway replicas when one replica counts only its own requests. E.g. 3 replicas of 64
    seats, 4 tenants, 1 gateway: 48; with 2 gateways, 24 per gateway."""
    return seats / max(1, tenants_in_flight) / max(1, gateways)


def priority(tenant_in_flight: float, share: float) -> int:
    """The ``priority`` of a tenant's next request: :data:`WITHIN_SHARE` while its requests in
    flight on the fleet are at most ``share`` (:func:`fair_share`), else :data:`BEYOND_SHARE`.
    E.g. 30 in flight at a share of 48: 0; 900: 1."""
    return WITHIN_SHARE if tenant_in_flight <= share else BEYOND_SHARE
