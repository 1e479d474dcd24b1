"""The functional core: pure decisions from a metrics snapshot and ``now``.

* :mod:`tidepool.policy.signals`: ``Sample | NoData``; missing data is never zero.
* :mod:`tidepool.policy.autoscale`: how many replicas (queue depth, warm minimum, scale to zero).
* :mod:`tidepool.policy.placement`: serverless, dedicated or hybrid (utilization and cost).
* :mod:`tidepool.policy.cost`: per-token versus per-GPU-hour arithmetic, with published examples.

Nothing here does I/O, reads the clock or imports ``kopf``, ``kubernetes`` or
``prometheus_api_client`` (import-linter enforces it), and ``autoscale`` and ``placement`` do not
import each other. The operator and ``tidepool simulate`` call the same functions.
"""
