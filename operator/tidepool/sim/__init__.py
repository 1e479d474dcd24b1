"""``tidepool simulate`` and ``tidepool advise``: replay traces through the real policies.

:mod:`~tidepool.sim.traces` reads, :mod:`~tidepool.sim.engine` simulates,
:mod:`~tidepool.sim.baselines` holds the controllers (Tidepool's policies and the baselines),
:mod:`~tidepool.sim.report` and :mod:`~tidepool.sim.plots` present, and
:mod:`~tidepool.sim.config` holds every default number.
Nothing here talks to Kubernetes or Prometheus.
"""
