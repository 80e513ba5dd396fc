"""Prometheus metrics for vkclient: a ready-made ``metrics=`` sink.

    import prometheus_client, vkclient
    from vkclient.prometheus import PrometheusMetrics

    cfg = vkclient.Config(standalone="127.0.0.1:6379", metrics=PrometheusMetrics())
    prometheus_client.start_http_server(8000)      # or generate_latest(REGISTRY)

Every metric the core reports becomes a prometheus_client metric with the
core's name (after ``namespace + "_"`` when a namespace is given), type and
label names; see METRICS. The known metrics are registered when the adapter
is made (a clash with a collector that is not vkclient's is a ValueError
there, not a failure on the hot path). A metric this table does not know
(from a newer core) is registered when first reported, with the label
names of that report.

Clients may share a registry, each with a PrometheusMetrics of its own:
the adapters on one (registry, namespace) share the metric families, so
counters and histograms add up over the clients, the pool gauges
(connections, waiters) are summed over them at scrape time, and
redis_iam_token_expiry_seconds is the soonest expiry among them. One
adapter serves one client: two clients reporting gauges through the same
adapter would overwrite each other's values.

Labels: a label the core leaves out (``node`` outside Cluster mode) is
exported as the empty string, which Prometheus treats as absent; a label a
metric was not registered with is dropped.

The sink is called from the core's threads (the GIL is taken by the
binding); everything here is thread-safe, and a report costs one dict
look-up and one update of the cached child metric.

Needs prometheus_client (Debian: python3-prometheus-client); ``import
vkclient`` itself does not.
"""

import bisect
import functools
import math
import re
import threading
import weakref

try:
    import prometheus_client
    from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
    from prometheus_client.utils import floatToGoString
except ImportError as _err:  # the message says what to install
    raise ImportError(
        "vkclient.prometheus needs the prometheus_client package, which is not installed "
        "(Debian: apt-get install python3-prometheus-client)",
        name=getattr(_err, "name", None) or "prometheus_client") from _err

__all__ = ["PrometheusMetrics", "METRICS", "COMMAND_DURATION_BUCKETS", "LOCK_HOLD_BUCKETS"]

# Commands: from a loopback round trip (~50 µs) up to the 10 s of a slow
# server or a blocking command.
COMMAND_DURATION_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                            0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Lock holds: from an acquire+release pair (~1 ms) up to long-held,
# auto-renewed locks (minutes).
LOCK_HOLD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                     2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

# The metrics the core reports: name -> (kind, label names, help). A gauge
# of several clients on one registry is their "sum" or their "min".
METRICS = {
    "redis_command_duration_seconds": (
        "histogram", ("command",),
        "Duration of a client command (retries and redirects included), by command name."),
    "redis_connection_failures_total": (
        "counter", ("operation",),
        "Failed attempts to connect (operation=connect) or reconnect (operation=reconnect)."),
    "redis_reconnections_total": (
        "counter", ("result",), "Reconnections, by result (success, failure)."),
    "redis_pool_connections": (
        "gauge", ("state", "node"),
        "Pooled connections by state (in_use, idle); node is set in Cluster mode."),
    "redis_pool_waiters": (
        "gauge", ("node",),
        "Callers waiting for a pooled connection; node is set in Cluster mode."),
    "redis_cluster_redirects_total": (
        "counter", ("type",), "Cluster redirects followed, by type (moved, ask)."),
    "redis_cluster_refusals_total": (
        "counter", ("type",),
        "Cluster refusals retried, by type (tryagain, clusterdown, loading, ...)."),
    "redis_cluster_slot_refreshes_total": (
        "counter", (), "Cluster slot map reloads."),
    "redis_sentinel_failovers_total": (
        "counter", ("master",), "Master switches seen through Sentinel, by master name."),
    "redis_iam_token_refresh_total": (
        "counter", ("result",), "GCP IAM token refreshes, by result (success, failure)."),
    "redis_iam_token_expiry_seconds": (
        "gauge", (), "Seconds until the GCP IAM token in service expires (the soonest of the "
                     "clients sharing the registry)."),
    "redis_lock_acquisitions_total": (
        "counter", ("result",), "Lock acquisitions, by result (acquired, contended, error)."),
    "redis_lock_release_total": (
        "counter", ("result",), "Lock releases, by result (released, not_held, error)."),
    "redis_lock_hold_seconds": (
        "histogram", (), "Time a lock was held, from acquisition to release."),
}
_DEFAULT_BUCKETS = {"redis_command_duration_seconds": COMMAND_DURATION_BUCKETS,
                    "redis_lock_hold_seconds": LOCK_HOLD_BUCKETS}
_MIN_GAUGES = frozenset({"redis_iam_token_expiry_seconds"})
# Read from the client when scraped rather than reported at each change.
_POOL_GAUGES = frozenset({"redis_pool_connections", "redis_pool_waiters"})
_NAMESPACE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


class _Gauge:
    """A gauge family whose value is combined over the adapters at scrape
    time: each adapter keeps its own client's latest values (a plain dict
    store on the hot path) and collect() sums them (or takes the minimum)."""

    def __init__(self, families, name, full_name, labelnames, documentation, combine):
        self.families = families
        self.name = name
        self.full_name = full_name
        self.labelnames = labelnames
        self.documentation = documentation
        self.combine = combine

    def _family(self):
        return GaugeMetricFamily(self.full_name, self.documentation, labels=self.labelnames)

    def describe(self):
        return [self._family()]

    def collect(self):
        combined = {}
        for adapter in self.families.live_adapters():
            if self.name in _POOL_GAUGES:
                adapter._read_pool_gauges()
            values = adapter._gauges.get(self.name)
            for labelvalues, value in list(values.items()) if values else ():
                if labelvalues not in combined:
                    combined[labelvalues] = value
                else:
                    combined[labelvalues] = self.combine(combined[labelvalues], value)
        family = self._family()
        for labelvalues, value in sorted(combined.items()):
            family.add_metric(labelvalues, value)
        return [family]


class _HistogramChild:
    """One label set's buckets: an observation is a bisection and two
    additions under a lock (prometheus_client's Histogram takes a lock per
    bucket and per sum, which doubles the adapter's cost per command)."""

    __slots__ = ("bounds", "counts", "total", "lock")

    def __init__(self, bounds):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)   # the last one: +Inf
        self.total = 0.0
        self.lock = threading.Lock()

    def observe(self, value):
        i = bisect.bisect_left(self.bounds, value)   # the first bound >= value
        with self.lock:
            self.counts[i] += 1
            self.total += value

    def snapshot(self):
        with self.lock:
            return list(self.counts), self.total


class _Histogram:
    """A histogram family, exported as prometheus_client's would be
    (cumulative buckets with Go-style le labels, _sum and _count), shared by
    the adapters of one registry so that their observations add up."""

    def __init__(self, full_name, labelnames, documentation, bounds):
        self.full_name = full_name
        self.labelnames = tuple(labelnames)
        self.documentation = documentation
        self.bounds = tuple(float(b) for b in bounds)
        self.lock = threading.Lock()
        self.children = {}
        if not self.labelnames:
            self.children[()] = _HistogramChild(self.bounds)   # 0 before any report

    def labels(self, *labelvalues):
        child = self.children.get(labelvalues)
        if child is None:
            with self.lock:
                child = self.children.setdefault(labelvalues, _HistogramChild(self.bounds))
        return child

    def observe(self, value):
        self.children[()].observe(value)

    def _family(self):
        return HistogramMetricFamily(self.full_name, self.documentation, labels=self.labelnames)

    def describe(self):
        return [self._family()]

    def collect(self):
        family = self._family()
        les = [floatToGoString(b) for b in self.bounds + (math.inf,)]
        with self.lock:
            children = sorted(self.children.items())
        for labelvalues, child in children:
            counts, total = child.snapshot()
            cumulative, buckets = 0, []
            for le, n in zip(les, counts):
                cumulative += n
                buckets.append((le, cumulative))
            family.add_metric(labelvalues, buckets, total)
        return [family]


class _Families:
    """The metric families of one (registry, namespace), shared by every
    adapter made for them so that a name is registered once."""

    def __init__(self, registry, namespace, buckets):
        # Weak: _SHARED is keyed by the registry and must not keep it alive.
        self.registry = weakref.ref(registry)
        self.namespace = namespace
        self.buckets = buckets          # histogram name -> bounds
        self.lock = threading.Lock()
        self.metrics = {}               # core name -> (kind, label names, metric)
        self.registered = []
        self.adapters = weakref.WeakSet()
        try:
            for name, (kind, labelnames, documentation) in METRICS.items():
                self.add(name, kind, labelnames, documentation)
        except BaseException:
            for collector in self.registered:
                registry.unregister(collector)
            raise

    def live_adapters(self):
        with self.lock:
            return list(self.adapters)

    def full_name(self, name):
        return self.namespace + "_" + name if self.namespace else name

    def add(self, name, kind, labelnames, documentation):
        """Makes and registers the family of a core metric (under self.lock,
        or before the families are shared)."""
        full_name = self.full_name(name)
        registry = self.registry()
        if registry is None:
            raise ValueError("vkclient.prometheus: the registry is gone")
        if kind == "counter":
            metric = prometheus_client.Counter(full_name, documentation, labelnames,
                                               registry=None)
        elif kind == "histogram":
            metric = _Histogram(full_name, labelnames, documentation,
                                self.buckets.get(name, COMMAND_DURATION_BUCKETS))
        else:
            kind = "gauge"
            metric = _Gauge(self, name, full_name, labelnames, documentation,
                            min if name in _MIN_GAUGES else _add)
        try:
            registry.register(metric)
        except ValueError as err:
            raise ValueError(
                "vkclient.prometheus: cannot register %s: the registry already has a collector "
                "of that name that vkclient.prometheus did not make (%s); give the adapter "
                "another registry or a namespace" % (full_name, err)) from None
        self.registered.append(metric)
        self.metrics[name] = entry = (kind, tuple(labelnames), metric)
        return entry

    def get(self, name, kind, labels):
        """The (kind, label names, metric) of a core metric; one the table
        does not know is made now, from this first report."""
        entry = self.metrics.get(name)
        if entry is not None:
            return entry
        with self.lock:
            entry = self.metrics.get(name)
            if entry is None:
                entry = self.add(name, kind, tuple(labels),
                                 "vkclient metric %s (reported by the core)." % name)
            return entry


def _add(a, b):
    return a + b


def _ignore(value):
    pass


# registry -> {namespace: _Families}; guarded by _SHARED_LOCK.
_SHARED = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


def _families_for(registry, namespace, buckets):
    with _SHARED_LOCK:
        by_namespace = _SHARED.setdefault(registry, {})
        families = by_namespace.get(namespace)
        if families is None:
            effective = dict(_DEFAULT_BUCKETS)
            effective.update(buckets or {})
            families = _Families(registry, namespace, effective)
            by_namespace[namespace] = families
        elif buckets:
            differing = sorted(n for n, b in buckets.items() if families.buckets.get(n) != b)
            if differing:
                raise ValueError(
                    "vkclient.prometheus: %s already has other buckets on this registry "
                    "(namespace %r): adapters sharing a registry share its histograms"
                    % (", ".join(differing), namespace))
        return families


def _checked_buckets(buckets):
    if buckets is None:
        return None
    if not hasattr(buckets, "items"):
        raise TypeError("buckets must be a mapping of metric name to upper bounds, not %s"
                        % type(buckets).__name__)
    checked = {}
    for name, bounds in buckets.items():
        if not isinstance(name, str):
            raise TypeError("buckets keys must be metric names (str), not %s"
                            % type(name).__name__)
        known = METRICS.get(name)
        if known is not None and known[0] != "histogram":
            raise ValueError("buckets: %s is a %s, not a histogram" % (name, known[0]))
        bounds = tuple(float(b) for b in bounds)
        if not bounds or list(bounds) != sorted(set(bounds)):
            raise ValueError("buckets for %s must be increasing upper bounds" % name)
        checked[name] = bounds
    return checked


class PrometheusMetrics:
    """A metrics sink for ``vkclient.Config(metrics=...)`` that feeds
    prometheus_client.

    registry: the prometheus_client CollectorRegistry (None: the default
    prometheus_client.REGISTRY). namespace: a prefix, ``namespace_`` before
    every name ("" for none). buckets: optional histogram upper bounds by
    core metric name, e.g. ``{"redis_command_duration_seconds": (0.001, 0.01)}``
    (defaults: COMMAND_DURATION_BUCKETS, LOCK_HOLD_BUCKETS); adapters on
    one registry and namespace share their histograms, so they must agree.

    Give each client its own adapter; adapters may share a registry (see
    the module's help). Raises ValueError when the registry already holds a
    metric of the same name that another library made.
    """

    # The client reads its pool gauges when scraped (Config turns their
    # report at each change off: three calls into Python per command).
    scrapes_pool_gauges = True

    __slots__ = ("registry", "namespace", "_families", "_updates", "_gauges", "_client",
                 "__weakref__")

    def __init__(self, registry=None, namespace="", buckets=None):
        if registry is None:
            registry = prometheus_client.REGISTRY
        if not isinstance(namespace, str):
            raise TypeError("namespace must be a str, not %s" % type(namespace).__name__)
        if namespace and not _NAMESPACE.match(namespace):
            raise ValueError("namespace must match [a-zA-Z_:][a-zA-Z0-9_:]*, got %r" % namespace)
        self.registry = registry
        self.namespace = namespace
        self._updates = {}   # (name, (label, value)...) -> callable(value)
        self._gauges = {}    # name -> {label values: this client's latest value}
        self._client = None  # weakref to the blocking client it serves
        self._families = _families_for(registry, namespace, _checked_buckets(buckets))
        with self._families.lock:
            self._families.adapters.add(self)

    def __call__(self, name, kind, value, labels):
        try:
            update = self._updates[(name, *labels.items())]
        except KeyError:
            update = self._resolve(name, kind, labels)
        update(value)

    def _resolve(self, name, kind, labels):
        """Finds (or makes) the child metric of this report and caches the
        call that updates it."""
        key = (name, *labels.items())
        try:
            kind, labelnames, metric = self._families.get(name, kind, labels)
        except Exception:
            self._updates[key] = _ignore     # said once, through sys.unraisablehook
            raise
        labelvalues = tuple(labels.get(label, "") for label in labelnames)
        if kind == "gauge":
            values = self._gauges.setdefault(name, {})
            update = functools.partial(values.__setitem__, labelvalues)
        else:
            child = metric.labels(*labelvalues) if labelnames else metric
            update = child.inc if kind == "counter" else child.observe
        self._updates[key] = update
        return update

    def attach_client(self, client):
        """Called by vkclient.Client with itself: the client whose pool
        gauges a scrape reads."""
        self._client = weakref.ref(client)

    def _read_pool_gauges(self):
        """The attached client's pool gauges now, through the sink; 0 once
        the client is closed or gone, as a closing pool reports them. A
        sink used without a client attached (wrapped in another callable)
        keeps what the pool reported at each change."""
        if self._client is None:
            return
        client = self._client()
        if client is not None and client._pointer() is not None:
            for name in _POOL_GAUGES:
                self._gauges.get(name, {}).clear()
            client._report_pool_gauges()
            return
        for name in _POOL_GAUGES:
            values = self._gauges.get(name, {})
            for labelvalues in values:
                values[labelvalues] = 0.0

    def __repr__(self):
        return "PrometheusMetrics(namespace=%r)" % (self.namespace,)
