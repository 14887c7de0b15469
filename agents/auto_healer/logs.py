"""Logging: structlog with contextvars (every line of an injury carries its id), human on a TTY
(coloured as `auto_healer.terminal` decides), JSON lines otherwise, always on stderr so stdout
stays the report.

Also the one place that makes remote or configured text safe to log or store: `redact_secrets`
for free text (a webhook's answer, an error), `redact_url`/`mask_url`/`public_url` for URLs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TextIO, cast
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit, urlunsplit

import orjson
import structlog

from auto_healer.loglevel import set_least
from auto_healer.terminal import is_terminal, use_color

REDACTED = "**********"


def configure_logging(
    fmt: Literal["auto", "json", "console"] = "auto", level: str = "info"
) -> None:
    """Configure structlog once at start-up."""
    least = logging.getLevelNamesMapping()[level.upper()]
    set_least(least)
    as_json = fmt == "json" or (fmt == "auto" and not is_terminal(sys.stderr))
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(serializer=_json_line)
        if as_json
        else structlog.dev.ConsoleRenderer(colors=use_color(sys.stderr))
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(least),
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, _Stderr())),
        cache_logger_on_first_use=False,
    )


def cache_loggers() -> None:
    """For a long-running agent: each logger is bound to the configuration once, on first use,
    instead of on every call. Not for tests or one-shot commands that reconfigure logging."""
    structlog.configure(cache_logger_on_first_use=True)


class bound:  # named like structlog's `bound_contextvars`, which it replaces
    """Bind `kw` to the context-local log context for a `with` block, then restore what was
    there: structlog's `bound_contextvars` without its generator and its copy of the whole
    context (it runs a few times per injury on the agent's loop)."""

    __slots__ = ("kw", "tokens")

    def __init__(self, **kw: object) -> None:
        self.kw = kw
        self.tokens: Mapping[str, Any] = {}

    def __enter__(self) -> None:
        self.tokens = structlog.contextvars.bind_contextvars(**self.kw)

    def __exit__(self, *exc: object) -> None:
        structlog.contextvars.reset_contextvars(**self.tokens)


def _json_line(event: object, **kw: object) -> str:
    """A log line as JSON by orjson; what orjson refuses (a lone surrogate) by the standard
    library, which escapes it."""
    try:
        return orjson.dumps(event, default=repr).decode()
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(event, **kw)  # type: ignore[arg-type]


class _Stderr:
    """Whatever `sys.stderr` is at the time of writing (it may be replaced after start-up).

    A log write never raises into the caller (a page or a heal is worth more than a log line):
    text the stream cannot encode (a lone surrogate from an injury) is written backslash-escaped,
    and a closed or broken stderr loses the line.
    """

    def write(self, text: str) -> int:
        try:
            try:
                return sys.stderr.write(text)
            except UnicodeEncodeError:
                return sys.stderr.write(text.encode("ascii", "backslashreplace").decode("ascii"))
        except (OSError, ValueError):
            return 0

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()


# user:password@ up to the last "@" before the host (a password may hold a raw "@").
_URL_USERINFO = re.compile(r"(?<=://)[^/?#,\s]*@")
_TEXT_USERINFO = re.compile(r"(?<=://)[^/?#,\s\"'<>]*@")
_SENSITIVE_FIELD = (
    r"(?:routing[_-]?key|integration[_-]?key|api[_-]?key|[a-z_]*token|secret|client[_-]?secret"
    r"|password|passwd|pwd|authorization|auth|cookie)"
)
_SECRET_SHAPES = [
    # Header lines: `Authorization: Bearer x`, `Cookie: a=b` (the whole value, to the line end).
    (r"(?im)\b((?:proxy-)?authorization|(?:set-)?cookie)(\s*:\s*)[^\r\n\"]+", rf"\1\2{REDACTED}"),
    # Quoted values: `"routing_key": "…"`, `password='…'` (JSON, reprs, forms).
    (rf"(?i)\b({_SENSITIVE_FIELD}[\"']?\s*[:=]\s*)\"(?:[^\"\\]|\\.)*\"", rf'\1"{REDACTED}"'),
    (rf"(?i)\b({_SENSITIVE_FIELD}[\"']?\s*[:=]\s*)'(?:[^'\\]|\\.)*'", rf"\1'{REDACTED}'"),
    # Bare values: `token=…&`, `password: …`.
    (rf"(?i)\b({_SENSITIVE_FIELD}\s*[:=]\s*)(?![\"'\s])[^\s&\"',;}}<>]+", rf"\1{REDACTED}"),
]


def redact_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    """Text from elsewhere (a webhook's answer, an error), safe to log or store.

    Removes the known `secrets` (also JSON- or URL-escaped), URL credentials, and the values of
    anything shaped like a secret: `"routing_key": "…"`, `token=…`, `password=…`,
    `Authorization: …`. Redact before truncating, or a cut secret escapes whole-value matching.
    """
    forms = {f for s in secrets if s for f in _escaped_forms(s)}
    if forms:
        known = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
        text = re.sub(known, REDACTED, text)
    text = _TEXT_USERINFO.sub(REDACTED + "@", text)
    for pattern, replacement in _SECRET_SHAPES:
        text = re.sub(pattern, replacement, text)
    return text


def _escaped_forms(secret: str) -> set[str]:
    """A secret as it may appear when echoed: raw, inside JSON, percent-encoded."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret)}
    forms |= {json.dumps(secret, ensure_ascii=a)[1:-1] for a in (True, False)}
    return forms


def url_secrets(url: str) -> list[str]:
    """The secret parts of a URL (password, a token as user, query values), for `redact_secrets`.

    A user name beside a password, and query values shorter than 8 characters (`v=2`), are kept
    out: redacting every "2" in a log would hide more than it protects.
    """
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:
        return []
    found = [password] if password else [user] if user and len(user) >= 8 else []
    found += [v for _, v in parse_qsl(parts.query) if len(v) >= 8]
    return [s for s in found if s]


def redact_url(url: str) -> str:
    """URLs (one, or a comma-separated list) without user:password@: safe for logs and events."""
    return _URL_USERINFO.sub("", url)


def mask_url(url: str) -> str:
    """One URL with its password (or a lone user, often a token) and query values shown as
    `REDACTED`: the shape of the URL stays visible (a dry-run's plan, a config error)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        shown = f"{user.split(':', 1)[0]}:{REDACTED}" if ":" in user else REDACTED
        netloc = f"{shown}@{host}"
    query = "&".join(f"{kv.split('=', 1)[0]}={REDACTED}" for kv in parts.query.split("&") if kv)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def public_url(url: str) -> str:
    """One URL with credentials, path and query removed: safe to log and to put in reports."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return REDACTED
    netloc = f"[{host}]" if ":" in host else host
    return urlunsplit((parts.scheme, netloc + (f":{port}" if port else ""), "", "", ""))
