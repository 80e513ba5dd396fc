"""Logger, metrics and tracer sinks: from what Python users pass to what the core calls.

The core calls a sink as ``sink(level, message, fields)`` (logger) or
``sink(name, kind, value, labels)`` (metrics), possibly from a background
thread (the IAM refresh loop); the C trampolines take the GIL first.
"""

import logging

# The core's level names (vk_log_level_name) -> logging levels.
LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}

# Attributes of logging.LogRecord: a field with one of these names cannot go
# into `extra` as is (logging raises KeyError), so it gets a "vk_" prefix.
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class LoggingSink:
    """Forwards core log events to a ``logging.Logger``.

    Levels map to logging levels; the event's fields become attributes of
    the LogRecord (through ``extra``) and are also available together as
    ``record.vk_fields``.
    """

    __slots__ = ("logger",)

    def __init__(self, logger):
        self.logger = logger

    def __call__(self, level, message, fields):
        levelno = LOG_LEVELS.get(level, logging.INFO)
        if not self.logger.isEnabledFor(levelno):
            return
        extra = {("vk_" + k if k in _RESERVED else k): v for k, v in fields.items()}
        extra["vk_fields"] = dict(fields)
        self.logger.log(levelno, message, extra=extra)

    def __repr__(self):
        return "LoggingSink(%r)" % (self.logger,)


def log_sink(logger):
    """None, a logging.Logger (or LoggerAdapter), or a callable(level, message, fields)."""
    if logger is None:
        return None
    if isinstance(logger, (logging.Logger, logging.LoggerAdapter)):
        return LoggingSink(logger)
    if callable(logger):
        return logger
    raise TypeError("logger must be a logging.Logger, a callable(level, message, fields) or None")


def metrics_sink(metrics):
    """None or a callable(name, kind, value, labels)."""
    if metrics is None or callable(metrics):
        return metrics
    raise TypeError("metrics must be a callable(name, kind, value, labels) or None")


def tracer_sink(tracer):
    """None or an object with start_span and end_span methods."""
    if tracer is None:
        return None
    for method in ("start_span", "end_span"):
        if not callable(getattr(tracer, method, None)):
            raise TypeError("tracer must have start_span(name, parent, attributes, start_ns) "
                            "and end_span(span, error, attributes, end_ns) methods, or be None")
    return tracer
