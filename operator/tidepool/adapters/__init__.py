"""The shell's edge: the only modules that import ``kubernetes`` or ``prometheus_api_client``.

Each adapter turns wire data into typed values at once, so nothing above sees a raw dict from the
API server or a Prometheus vector.
"""
