"""Which SharedEngine replica a LoRA request goes to: the gateway's and the simulator's one rule.

Role: :func:`preference` orders the fleet replicas that hold a request's adapter, best first.
The gateway's picker (:func:`tidepool.gateway.picking.choose`) takes the first; the fleet
simulator (:mod:`tidepool.sim.shared`) places a cohort of requests down the same order. Both
call this function, so the simulated routing is the gateway's.

The rule, in three ranks:

0. replicas already running the adapter that have a free batch seat: the one running *the most*
   of it, then the fewest in flight. Requests of an adapter already in a batch add no adapter to
   it, and packing each adapter onto its fullest replicas confines it to the fewest replicas its
   load needs: the replicas it has spilled onto in a burst get no more of it and drain of it
   once the burst is served, so their adapter slots come free for the others;
1. other replicas with a free seat: the one whose batch runs the fewest distinct adapters, then
   the fewest in flight. A new adapter is best added where the batch has ``maxLoras`` room left;
2. replicas with no free seat: the fewest in flight (the request queues there in vLLM; the
   simulator's fleet holds it at the gateway instead).

Why: vLLM's ``--max-loras`` bounds the distinct adapters in one running batch; a request whose
adapter would be one too many waits while others pass it. A fleet where a heavy tenant keeps
requests in flight on *every* replica (spread least-outstanding, or "fewest in flight among the
replicas running it": each arrival then goes to the replica that has the least of it, so none
ever drains of it) has that adapter's slot taken everywhere; three such tenants leave one slot
of four per replica to every other tenant, whose requests then wait for a free adapter slot with
seats to spare. Confined, a tenant keeping 287 requests in flight occupies one slot on the five
replicas its load fills (at 64 seats), not on all twelve of the fleet.

E.g. adapter ``bot`` running 20 of replica A's 50 in flight and 3 of B's 10 (64 seats each): A
(most of ``bot``), although B has more free seats. Neither running it, A with 3 adapters in its
batch and 40 in flight, B with 4 and 10: A. A at 64 of 64: rank 2.

Must not: read the clock, do I/O, or import anything beyond the standard library.
"""

PreferenceKey = tuple[int, float, float]
"""Lower is better; compare only keys of replicas placing a request of the same adapter."""


def preference(
    *, in_flight: float, seats: float, this_adapter: float, adapters: float
) -> PreferenceKey:
    """The sort key of one replica holding a request's adapter (module docstring), lowest first.

    ``in_flight``: requests running on the replica (every adapter); ``seats``: its batch seats
    (vLLM's ``--max-num-seqs``); ``this_adapter``: the requests of the request's adapter among
    them; ``adapters``: the distinct adapters its batch runs (the simulator counts them in
    expectation). E.g. 20 of ``bot`` in 50 of 64: ``(0, -20, 50)``; none of ``bot``, 3 adapters
    in 40: ``(1, 3, 40)``; 64 of 64: ``(2, 64, 0)``.
    """
    if in_flight >= seats:
        return (2, in_flight, 0.0)
    if this_adapter > 0:
        return (0, -this_adapter, in_flight)
    return (1, adapters, in_flight)


__all__ = ["PreferenceKey", "preference"]
