"""Configuration: topology, TLS, auth, connection options and sinks.

These classes only carry values. Defaults, normalisation and validation are
the core's (SEMANTICS §1): an option left as None means "the default", and
every mistake is reported by the core with its exact text when the config
is used, e.g. ``InvalidConfigError("invalid redis config: standalone address
is required")``. Durations are seconds (float) or ``datetime.timedelta``.
"""

import datetime
import math
import os

from . import _native
from ._sinks import log_sink, metrics_sink, tracer_sink

__all__ = [
    "Standalone", "Sentinel", "Cluster", "TLS", "StaticPassword", "GCPIAM",
    "ConnectionOptions", "Config", "TLS1_0", "TLS1_1", "TLS1_2", "TLS1_3",
]

TLS1_0 = _native.VK_TLS1_0
TLS1_1 = _native.VK_TLS1_1
TLS1_2 = _native.VK_TLS1_2
TLS1_3 = _native.VK_TLS1_3


def to_ms(value, name):
    """Seconds (int/float) or a timedelta -> whole milliseconds; None -> 0 (default)."""
    if value is None:
        return 0
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("%s must be seconds (int or float) or a datetime.timedelta, not %s"
                        % (name, type(value).__name__))
    if not math.isfinite(value):
        raise ValueError("%s must be a finite number of seconds" % name)
    return int(round(value * 1000.0))


# Wrong types are a TypeError naming the field and what it takes, raised
# here: never an AttributeError, or a TypeError of the native layer.

def _str(value, name, optional=True):
    if isinstance(value, str) or (optional and value is None):
        return value
    raise TypeError("%s must be a str%s, not %s"
                    % (name, " or None" if optional else "", type(value).__name__))


def _int(value, name):
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise TypeError("%s must be an int, not %s" % (name, type(value).__name__))


def _instance(value, cls, name):
    if value is None or isinstance(value, cls):
        return value
    raise TypeError("%s must be a vkclient.%s, not %s" % (name, cls.__name__, type(value).__name__))


def _addresses(value, name="addresses"):
    """A list of str from one "host:port" str or a list/tuple of them."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)):
        raise TypeError("%s must be a str or a list of str, not %s" % (name, type(value).__name__))
    for i, address in enumerate(value):
        _str(address, "%s[%d]" % (name, i), optional=False)
    return list(value)


class Standalone:
    """One node: ``"host:port"``, ``"[::1]:port"`` or ``"unix:/path.sock"``.
    ``Config(standalone="host:port")`` is the same as
    ``Config(standalone=Standalone("host:port"))``."""

    __slots__ = ("address",)

    def __init__(self, address):
        self.address = _str(address, "address")

    def __repr__(self):
        return "Standalone(%r)" % (self.address,)


class Sentinel:
    """Sentinel addresses and the master name; optional auth for the sentinels."""

    __slots__ = ("addresses", "master_name", "username", "password")

    def __init__(self, addresses, master_name=None, username=None, password=None):
        self.addresses = _addresses(addresses, "Sentinel addresses")
        self.master_name = master_name
        self.username = username
        self.password = password

    def __repr__(self):
        secret = ", password=REDACTED" if self.password is not None else ""
        return "Sentinel(%r, master_name=%r%s)" % (self.addresses, self.master_name, secret)


class Cluster:
    """Cluster seed node addresses (one str or a list of str).
    ``Config(cluster=["a:7000", "b:7000"])`` is the same as
    ``Config(cluster=Cluster([...]))``."""

    __slots__ = ("addresses",)

    def __init__(self, addresses):
        self.addresses = _addresses(addresses, "Cluster addresses")

    def __repr__(self):
        return "Cluster(%r)" % (self.addresses,)


class TLS:
    """TLS with peer and host name verification.

    Trust: at least one of ca_cert_base64 (base64 of a PEM CA bundle),
    ca_file (a PEM CA bundle's path) and use_system_ca=True (the system
    store, which honours SSL_CERT_FILE / SSL_CERT_DIR); every one given is
    trusted. A rediss:// URL without a CA trusts the system store.
    min_version: vkclient.TLS1_2 (the default floor) or TLS1_3; lower
    versions are raised to 1.2 unless allow_legacy_min_version is set, and
    even then the handshake never negotiates below TLS 1.2.
    client_cert_base64 / client_key_base64: mutual TLS (base64 of PEM).
    server_name: the name to verify instead of the host.
    """

    __slots__ = ("ca_cert_base64", "min_version", "allow_legacy_min_version",
                 "client_cert_base64", "client_key_base64", "server_name", "ca_file",
                 "use_system_ca")

    def __init__(self, ca_cert_base64=None, min_version=None, allow_legacy_min_version=False,
                 client_cert_base64=None, client_key_base64=None, server_name=None,
                 ca_file=None, use_system_ca=None):
        self.ca_cert_base64 = ca_cert_base64
        self.min_version = min_version
        self.allow_legacy_min_version = allow_legacy_min_version
        self.client_cert_base64 = client_cert_base64
        self.client_key_base64 = client_key_base64
        self.server_name = server_name
        self.ca_file = ca_file
        self.use_system_ca = use_system_ca

    def __repr__(self):
        trust = "".join(", %s=%r" % (name, getattr(self, name))
                        for name in ("ca_file", "use_system_ca")
                        if getattr(self, name) is not None)
        key = ", client_key_base64=REDACTED" if self.client_key_base64 else ""
        return "TLS(min_version=%r, allow_legacy_min_version=%r, server_name=%r%s%s)" % (
            self.min_version, self.allow_legacy_min_version, self.server_name, trust, key)


class StaticPassword:
    """A static password (and optional ACL username). Prints redacted."""

    __slots__ = ("password", "username")

    def __init__(self, password, username=None):
        self.password = password
        self.username = username

    def __repr__(self):
        return "StaticPasswordAuth{Password:REDACTED}"

    __str__ = __repr__


class GCPIAM:
    """Short-lived GCP IAM access tokens, refreshed in the background.

    credentials_base64: base64 of a service-account key JSON (None: from the
    environment). service_account: the account to act as. Durations in
    seconds; None means the default (token_lifetime 3600, refresh_every
    3000, refresh_check_interval 10, refresh_operation_timeout 15).
    iam_endpoint: base URL of the IAM Credentials API (for private or test
    endpoints). Prints redacted.
    """

    __slots__ = ("credentials_base64", "service_account", "token_lifetime", "refresh_every",
                 "refresh_check_interval", "refresh_operation_timeout", "iam_endpoint")

    def __init__(self, credentials_base64=None, service_account=None, token_lifetime=None,
                 refresh_every=None, refresh_check_interval=None, refresh_operation_timeout=None,
                 iam_endpoint=None):
        self.credentials_base64 = credentials_base64
        self.service_account = service_account
        self.token_lifetime = token_lifetime
        self.refresh_every = refresh_every
        self.refresh_check_interval = refresh_check_interval
        self.refresh_operation_timeout = refresh_operation_timeout
        self.iam_endpoint = iam_endpoint

    def __repr__(self):
        return "GCPIAMAuth{ServiceAccount:%s, CredentialsBase64:REDACTED}" % (
            self.service_account or "",)

    __str__ = __repr__


class ConnectionOptions:
    """Protocol, pool, timeouts and retries. None (or 0) means the default:

    db 0, protocol 2 (3 = RESP3, needs hiredis >= 1.0), pool_size 10 (at
    most 1000), min_idle_conns 0, read_timeout / write_timeout 3 s,
    dial_timeout 5 s, pool_timeout 2 s, max_retries 3 (-1: none),
    min_retry_backoff 0.008 s, max_retry_backoff 1 s.
    """

    __slots__ = ("db", "protocol", "pool_size", "min_idle_conns", "read_timeout",
                 "write_timeout", "dial_timeout", "pool_timeout", "max_retries",
                 "min_retry_backoff", "max_retry_backoff")

    def __init__(self, db=None, protocol=None, pool_size=None, min_idle_conns=None,
                 read_timeout=None, write_timeout=None, dial_timeout=None, pool_timeout=None,
                 max_retries=None, min_retry_backoff=None, max_retry_backoff=None):
        self.db = db
        self.protocol = protocol
        self.pool_size = pool_size
        self.min_idle_conns = min_idle_conns
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.dial_timeout = dial_timeout
        self.pool_timeout = pool_timeout
        self.max_retries = max_retries
        self.min_retry_backoff = min_retry_backoff
        self.max_retry_backoff = max_retry_backoff

    def __repr__(self):
        return "ConnectionOptions(%s)" % ", ".join(
            "%s=%r" % (name, getattr(self, name)) for name in self.__slots__
            if getattr(self, name) is not None)


class Config:
    """A client configuration: exactly one of standalone / sentinel / cluster
    (or a URL, see from_url), optional tls, at most one of static_password /
    gcp_iam, options, and the sinks. standalone may be a plain "host:port"
    str and cluster a list of str (or one str); a field of another type is
    a TypeError naming it when the config is used.

    logger: a logging.Logger, or a callable(level: str, message: str,
    fields: dict); metrics: a callable(name: str, kind: str, value: float,
    labels: dict). Either may be called from a background thread.

    tracer: an object with ``start_span(name, parent, attributes,
    start_ns)``, which returns the tracer's span (any object), and
    ``end_span(span, error, attributes, end_ns)``; error is None on
    success, else the failure's text. parent is the span start_span
    returned for the enclosing vkclient span (a connect inside a
    with_lock), or None: the tracer's own current context is then the
    parent. Spans: redis.connect, redis.reconnect, redis.close,
    redis.iam_refresh (on the refresh thread, without a parent),
    redis.lock.try_lock, redis.lock.with_lock, and with
    trace_commands=True one redis.command per command or pipeline. No
    attribute holds a secret or a command's arguments.

    repr()/str() show the core's redacted description: no secret ever
    appears.
    """

    __slots__ = ("standalone", "sentinel", "cluster", "tls", "static_password", "gcp_iam",
                 "options", "logger", "metrics", "tracer", "trace_commands", "url")

    def __init__(self, standalone=None, sentinel=None, cluster=None, tls=None,
                 static_password=None, gcp_iam=None, options=None, logger=None, metrics=None,
                 tracer=None, trace_commands=False):
        self.standalone = standalone
        self.sentinel = sentinel
        self.cluster = cluster
        self.tls = tls
        self.static_password = static_password
        self.gcp_iam = gcp_iam
        self.options = options
        self.logger = logger
        self.metrics = metrics
        self.tracer = tracer
        self.trace_commands = trace_commands
        self.url = None

    @classmethod
    def from_url(cls, url, tls=None, options=None, logger=None, metrics=None, tracer=None,
                 trace_commands=False):
        """redis://[[user]:password@]host[:port][/db], rediss://... (TLS,
        trusting the system store unless tls=TLS(...) gives a CA),
        unix://[[user]:password@]/path.sock[?db=N]."""
        cfg = cls(tls=tls, options=options, logger=logger, metrics=metrics, tracer=tracer,
                  trace_commands=trace_commands)
        cfg.url = url
        return cfg

    def validate(self):
        """Applies the defaults and validates, raising InvalidConfigError."""
        native = build_native(self, with_sinks=False)
        try:
            _native.vk_config_validate(native)
        finally:
            _native.vk_config_free(native)

    def __repr__(self):
        try:
            native = build_native(self, with_sinks=False)
        except Exception as err:  # an unusable value: say so, never the values
            return "Config{<unprintable: %s>}" % (err,)
        try:
            return _native.vk_config_describe(native)
        finally:
            _native.vk_config_free(native)

    __str__ = __repr__


def _apply_options(native, options):
    n = _native
    for name, setter in (("db", n.vk_config_set_db), ("protocol", n.vk_config_set_protocol),
                         ("pool_size", n.vk_config_set_pool_size),
                         ("min_idle_conns", n.vk_config_set_min_idle_conns),
                         ("max_retries", n.vk_config_set_max_retries)):
        value = _int(getattr(options, name), name)
        if value is not None:
            if not -2**31 <= value < 2**31:
                raise ValueError("%s must fit in a 32-bit int, got %d" % (name, value))
            setter(native, value)
    for name, setter in (("read_timeout", n.vk_config_set_read_timeout_ms),
                         ("write_timeout", n.vk_config_set_write_timeout_ms),
                         ("dial_timeout", n.vk_config_set_dial_timeout_ms),
                         ("pool_timeout", n.vk_config_set_pool_timeout_ms),
                         ("min_retry_backoff", n.vk_config_set_min_retry_backoff_ms),
                         ("max_retry_backoff", n.vk_config_set_max_retry_backoff_ms)):
        value = getattr(options, name)
        if value is not None:
            setter(native, to_ms(value, name))


def _checked_tls(tls):
    """tls itself, once its fields have the types the native layer takes."""
    for name in ("ca_cert_base64", "client_cert_base64", "client_key_base64", "server_name"):
        _str(getattr(tls, name), "TLS." + name)
    _int(tls.min_version, "TLS.min_version")
    return tls


def _apply_tls(native, tls):
    n = _native
    n.vk_config_set_tls(native, tls.ca_cert_base64)
    if tls.ca_file is not None:
        n.vk_config_set_tls_ca_file(native, os.fspath(tls.ca_file))
    if tls.use_system_ca is not None:
        n.vk_config_set_tls_use_system_ca(native, 1 if tls.use_system_ca else 0)
    if tls.min_version is not None:
        n.vk_config_set_tls_min_version(native, tls.min_version)
    n.vk_config_set_tls_allow_legacy_min_version(native, 1 if tls.allow_legacy_min_version else 0)
    if tls.client_cert_base64 is not None or tls.client_key_base64 is not None:
        n.vk_config_set_tls_client_cert(native, tls.client_cert_base64, tls.client_key_base64)
    if tls.server_name is not None:
        n.vk_config_set_tls_server_name(native, tls.server_name)


def _apply_gcp_iam(native, iam):
    n = _native
    n.vk_config_set_gcp_iam(native, _str(iam.credentials_base64, "GCPIAM.credentials_base64"),
                            _str(iam.service_account, "GCPIAM.service_account"))
    for name, setter in (("token_lifetime", n.vk_config_set_gcp_iam_token_lifetime_ms),
                         ("refresh_every", n.vk_config_set_gcp_iam_refresh_every_ms),
                         ("refresh_check_interval",
                          n.vk_config_set_gcp_iam_refresh_check_interval_ms),
                         ("refresh_operation_timeout",
                          n.vk_config_set_gcp_iam_refresh_operation_timeout_ms)):
        value = getattr(iam, name)
        if value is not None:
            setter(native, to_ms(value, name))
    if _str(iam.iam_endpoint, "GCPIAM.iam_endpoint") is not None:
        n.vk_config_set_gcp_iam_endpoint(native, iam.iam_endpoint)


def _standalone_address(standalone):
    if isinstance(standalone, str):
        return standalone
    if isinstance(standalone, Standalone):
        return _str(standalone.address, "Standalone.address")
    raise TypeError('standalone must be a str ("host:port") or a vkclient.Standalone, not %s'
                    % type(standalone).__name__)


def _cluster_addresses(cluster):
    if isinstance(cluster, Cluster):
        return _addresses(cluster.addresses, "Cluster addresses")
    if isinstance(cluster, (str, list, tuple)):
        return _addresses(cluster, "cluster")
    raise TypeError("cluster must be a vkclient.Cluster, a list of str or a str, not %s"
                    % type(cluster).__name__)


def _apply_sentinel(native, sentinel):
    n = _native
    addresses = _addresses(sentinel.addresses, "Sentinel addresses")
    n.vk_config_set_sentinel(native, _str(sentinel.master_name, "Sentinel.master_name") or "")
    for address in addresses:
        n.vk_config_add_sentinel_address(native, address)
    username = _str(sentinel.username, "Sentinel.username")
    password = _str(sentinel.password, "Sentinel.password")
    if password is not None or username is not None:
        n.vk_config_set_sentinel_auth(native, username, password)


def build_native(cfg, with_sinks=True):
    """The native vk_config for cfg; the caller frees it with vk_config_free."""
    if not isinstance(cfg, Config):
        raise TypeError("expected a vkclient.Config, got %s" % type(cfg).__name__)
    n = _native
    native = (n.vk_config_from_url(_str(cfg.url, "url")) if cfg.url is not None
              else n.vk_config_new())
    try:
        if cfg.standalone is not None:
            n.vk_config_set_standalone(native, _standalone_address(cfg.standalone))
        if cfg.sentinel is not None:
            _apply_sentinel(native, _instance(cfg.sentinel, Sentinel, "sentinel"))
        if cfg.cluster is not None:
            addresses = _cluster_addresses(cfg.cluster)
            n.vk_config_set_cluster(native)
            for address in addresses:
                n.vk_config_add_cluster_address(native, address)
        if cfg.tls is not None:
            _apply_tls(native, _checked_tls(_instance(cfg.tls, TLS, "tls")))
        if cfg.static_password is not None:
            auth = _instance(cfg.static_password, StaticPassword, "static_password")
            n.vk_config_set_static_password(native, _str(auth.username, "StaticPassword.username"),
                                            _str(auth.password, "StaticPassword.password"))
        if cfg.gcp_iam is not None:
            _apply_gcp_iam(native, _instance(cfg.gcp_iam, GCPIAM, "gcp_iam"))
        if cfg.options is not None:
            _apply_options(native, _instance(cfg.options, ConnectionOptions, "options"))
        if not isinstance(cfg.trace_commands, bool):
            raise TypeError("trace_commands must be a bool, not %s"
                            % type(cfg.trace_commands).__name__)
        tracer = tracer_sink(cfg.tracer)
        if with_sinks:
            if cfg.logger is not None:
                n.vk_config_set_logger(native, log_sink(cfg.logger))
            if cfg.metrics is not None:
                n.vk_config_set_metrics(native, metrics_sink(cfg.metrics))
                # A sink that reads the pool gauges when it is scraped
                # (vkclient.prometheus) spares every command their report.
                if getattr(cfg.metrics, "scrapes_pool_gauges", False):
                    n.vk_config_set_pool_gauges(native, 0)
            if tracer is not None:
                n.vk_config_set_tracer(native, tracer)
                n.vk_config_set_trace_commands(native, int(cfg.trace_commands))
    except BaseException:
        n.vk_config_free(native)
        raise
    return native
