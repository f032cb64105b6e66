"""Helpers for healthhost checks written in Python.

The host's contract is `wit/plugin.wit`; componentize-py turns it into the
`wit_world` package used below. This module wraps the parts every check repeats:

- building a report: `pass_`, `warn`, `fail`, and `sample` for a measurement;
- reading settings: `setting`, `setting_url`, `setting_ms`; a bad or missing value
  raises `SettingError`, whose text names the setting and the value;
- a timed HTTP request: `get_json` returns the response (or why there is none) and a
  latency sample; `describe` turns "no response" into a short message;
- a timed SQL query: `query`, with plain Python values in and out;
- `log`, to write to the host's log.

Results come as the bindings' own `Ok(value)` / `Err(error)` (from
`componentize_py_types`), so a check can `match` on them.
"""

import time

from componentize_py_types import Err, Ok
from wit_world.imports import config, http, sql
from wit_world.imports import log as host_log
from wit_world.imports.types import Report, Sample, Status

# --- Reports -----------------------------------------------------------------


def pass_(message=None, samples=()):
    """A passing report: the dependency works. (`pass` is a Python keyword.)"""
    return Report(Status.PASS, message, list(samples))


def warn(message, samples=()):
    """A warning: the dependency works but needs attention. Still healthy."""
    return Report(Status.WARN, message, list(samples))


def fail(message, samples=()):
    """A failing report: the dependency is down or unusable."""
    return Report(Status.FAIL, message, list(samples))


def sample(name, value, labels=None):
    """One measurement. `name` must be granted in the grant file (`grants.metrics`);
    `labels` is a dict of bounded values (never ids, URLs or free text)."""
    pairs = [(str(k), str(v)) for k, v in (labels or {}).items()]
    return Sample(name, pairs, float(value))


# --- Settings ----------------------------------------------------------------


class SettingError(Exception):
    """A setting is missing or malformed; the text names it and its value."""


def setting(key, default=None):
    """The setting `key` as a string, or `default` when it is not set."""
    value = config.get(key)
    return default if value is None else value


def setting_url(key, example):
    """The setting `key`, which must be set, as an http(s) URL. `example` shows the
    operator what is expected."""
    url = config.get(key)
    if url is None:
        raise SettingError(f"setting {key} is not set (expected a URL like {example})")
    if not url.startswith(("http://", "https://")):
        raise SettingError(f"invalid setting {key} = '{url}' (expected a URL like {example})")
    return url


def setting_ms(key, default):
    """The setting `key` as a whole number of milliseconds, or `default`."""
    raw = config.get(key)
    if raw is None:
        return default
    text = raw.strip()
    if not (text.isascii() and text.isdigit()):
        raise SettingError(f"invalid setting {key} = '{raw}' (expected milliseconds, e.g. {default})")
    return int(text)


# --- HTTP ----------------------------------------------------------------------


def get_json(url, timeout_ms, latency_name):
    """Sends `GET url` asking for JSON, and times it.

    Returns `(result, latency)`: `result` is `Ok(response)` (a `status`, `headers`
    and `body` as bytes) or `Err(error)` when no response came (see `describe`);
    `latency` is a sample named `latency_name` with the seconds it took.
    """
    request = http.Request(
        method="GET",
        url=url,
        headers=[("accept", "application/json")],
        body=None,
        timeout_ms=min(timeout_ms, 2**32 - 1),  # a u32 in the contract
    )
    started = time.monotonic()
    try:
        result = Ok(http.send(request))
    except Err as error:  # the host's typed error, e.g. http.Error_Timeout()
        result = error
    return result, sample(latency_name, time.monotonic() - started)


# --- SQL -----------------------------------------------------------------------


def query(datasource, statement, params, latency_name):
    """Runs one read-only statement on a granted datasource, and times it.

    `params` are plain values (None, bool, int, float, str, bytes) for the `?` (SQLite,
    MySQL) or `$1` (PostgreSQL) placeholders. Returns `(result, latency)`: `result` is
    `Ok(rows)`, each row a dict from column name to a plain value, or `Err(error)`.
    """
    values = [_to_sql(p) for p in params]
    started = time.monotonic()
    try:
        found = sql.query(datasource, statement, values)
        rows = [
            {column: value.value if hasattr(value, "value") else None
             for column, value in zip(found.columns, row)}
            for row in found.rows
        ]
        result = Ok(rows)
    except Err as error:
        result = error
    return result, sample(latency_name, time.monotonic() - started)


def _to_sql(value):
    # bool first: in Python, True is also an int.
    if value is None:
        return sql.Value_Null()
    if isinstance(value, bool):
        return sql.Value_Boolean(value)
    if isinstance(value, int):
        return sql.Value_Integer(value)
    if isinstance(value, float):
        return sql.Value_Real(value)
    if isinstance(value, str):
        return sql.Value_Text(value)
    if isinstance(value, (bytes, bytearray)):
        return sql.Value_Blob(bytes(value))
    raise TypeError(f"cannot pass {type(value).__name__} as an SQL parameter")


# --- Errors and logging ----------------------------------------------------------


def describe(error):
    """A short message for an HTTP request or SQL query that got no answer:
    "Timeout", "origin X not granted", "response too large", "datasource 'X' not
    granted", "result too large", or the host's text (transport, driver).
    Accepts the `Err` itself or its `.value`."""
    if isinstance(error, Err):
        error = error.value
    match error:
        case http.Error_Timeout() | sql.Error_Timeout():
            return "Timeout"
        case http.Error_Denied(origin):
            return f"origin {origin} not granted"
        case http.Error_TooLarge():
            return "response too large"
        case sql.Error_TooLarge():
            return "result too large"
        case http.Error_Transport(text) | http.Error_Invalid(text) | sql.Error_Database(text):
            return text
        case sql.Error_Denied(why) if ":" in why:  # "NAME: why the statement was refused"
            return f"datasource {why}"
        case sql.Error_Denied(name):
            return f"datasource '{name}' not granted"
        case sql.Error_NotConfigured(name):
            return f"datasource '{name}' not configured"
    return str(error)


def log(message, level="info"):
    """Writes one line to the host's log (level: trace, debug, info, warn, error)."""
    host_log.log(host_log.Level[level.upper()], message)
