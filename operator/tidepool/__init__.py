"""Tidepool: serverless, on-demand and dedicated LLM serving on your own Kubernetes GPUs.

Layout (enforced by the import-linter contracts in ``pyproject.toml``):

- ``api``        : the CRD types (pydantic, the source of truth), labels, conditions. Pure.
- ``policy``     : the autoscaler, the placement policy and the cost model. Pure functions of a
                   frozen snapshot and ``now``; shared by the operator and ``tidepool simulate``.
- ``render``     : pure builders of the Kubernetes objects Tidepool owns.
- ``adapters``   : the only modules that talk to Kubernetes or Prometheus.
- ``reconcile``  : glue that reads through adapters, asks the policy, renders and writes.
- ``handlers``   : thin Kopf handlers that call ``reconcile``.
- ``gateway``, ``enginesim``, ``sim``: the other programs behind the ``tidepool`` command.
"""

__version__ = "0.1.0"
