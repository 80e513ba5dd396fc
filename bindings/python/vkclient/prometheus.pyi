# Type stubs for vkclient.prometheus (the runtime module is
# vkclient/prometheus.py; it needs prometheus_client).
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

from prometheus_client import CollectorRegistry

__all__: List[str]

COMMAND_DURATION_BUCKETS: Tuple[float, ...]
LOCK_HOLD_BUCKETS: Tuple[float, ...]
# name -> (kind: "counter" | "gauge" | "histogram", label names, help)
METRICS: Dict[str, Tuple[str, Tuple[str, ...], str]]

class PrometheusMetrics:
    registry: CollectorRegistry
    namespace: str
    def __init__(self, registry: Optional[CollectorRegistry] = ..., namespace: str = ...,
                 buckets: Optional[Mapping[str, Iterable[float]]] = ...) -> None: ...
    def __call__(self, name: str, kind: str, value: float, labels: Dict[str, str]) -> None: ...
