"""Who may write through the console, and the defences of its forms.

- **The token**: `CONSOLE_TOKEN` (or the file `CONSOLE_TOKEN_FILE`, a mounted Secret), as
  `secret` or `name:secret`; its name (`CONSOLE_TOKEN_NAME` otherwise) is who the history says
  acted. Without one the console is read-only. The API takes it as `Authorization: Bearer`; the
  pages sign in once with it and get a session cookie (HttpOnly, SameSite=Strict). The token is
  compared in constant time and never rendered or logged.
- **CSRF**: each session has a random token that every form carries, compared in constant time;
  a write that comes with the session cookie must also come from this origin (`Origin`, which
  browsers send on every POST, else `Referer`).
- **Host**: only an IP address, `localhost` or a name of `CONSOLE_HOSTS`: a page whose own
  name an attacker's DNS now points here (DNS rebinding) reads nothing, as no other origin can.
- **Headers**: a CSP without inline script or style, no framing, no sniffing, no caching.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from auto_healer.errors import ConfigError
from auto_healer.settings import ConsoleSettings

SESSION_COOKIE = "auto_healer_console"
SESSION_TTL_S = 12 * 3600.0
MIN_SECRET_CHARS = 16
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = [
    ("Content-Security-Policy", CSP),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
]
NO_STORE = ("Cache-Control", "no-store")


class Refused(Exception):
    """A write the console does not carry out; `status` is the HTTP status to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class Token:
    """The one write token: its name (for the history) and its secret (never shown)."""

    name: str
    secret: str = field(repr=False)

    def matches(self, given: str) -> bool:
        given_bytes = given.encode("utf-8", "surrogatepass")  # a JSON body may hold \ud800
        return hmac.compare_digest(given_bytes, self.secret.encode())


def load_token(settings: ConsoleSettings) -> Token | None:
    """The write token from the settings or its file; None: the console is read-only."""
    text = settings.token.get_secret_value() if settings.token else None
    if text is None and settings.token_file is not None:
        try:
            text = settings.token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"CONSOLE_TOKEN_FILE: cannot read it: {exc.strerror}") from None
    if not text:
        return None
    name, secret = text.split(":", 1) if ":" in text else ("", text)
    if len(secret) < MIN_SECRET_CHARS:
        raise ConfigError(f"CONSOLE_TOKEN: the secret needs at least {MIN_SECRET_CHARS} characters")
    return Token(name=name.strip() or settings.token_name, secret=secret)


def load_hosts(settings: ConsoleSettings) -> frozenset[str]:
    """The host names of `CONSOLE_HOSTS` (a proxy's or an ingress's), lower case."""
    return frozenset(h.strip().lower() for h in settings.hosts.split(",") if h.strip())


@dataclass
class Session:
    """One signed-in browser: who, its CSRF token, until when, and a message to show once."""

    name: str
    csrf: str
    expires: float
    flash: list[str] = field(default_factory=list)


class Guardian:
    """The console's checks: sessions, CSRF, same origin, and the bearer token."""

    def __init__(self, token: Token | None, hosts: frozenset[str] = frozenset()) -> None:
        self.token, self.hosts = token, hosts
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()  # the WSGI server answers each request in its thread

    def known_host(self, host: str) -> bool:
        """Whether `Host` names this console: an IP address, localhost, or a configured name;
        not a name of the attacker's that resolves here for now."""
        name = urlsplit(f"//{host}").hostname or ""
        if "@" in host or not name:
            return False
        if name == "localhost" or name.endswith(".localhost") or name in self.hosts:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    @property
    def writable(self) -> bool:
        return self.token is not None

    def sign_in(self, given: str) -> str:
        """A new session id for the right token; `Refused` otherwise."""
        if self.token is None:
            raise Refused(403, "the console is read-only: no CONSOLE_TOKEN is set")
        if not self.token.matches(given):
            raise Refused(403, "wrong token")
        sid = secrets.token_urlsafe(32)
        with self._lock:
            now = time.time()
            for old in [k for k, s in self._sessions.items() if s.expires < now]:
                del self._sessions[old]
            self._sessions[sid] = Session(
                self.token.name, secrets.token_urlsafe(32), now + SESSION_TTL_S
            )
        return sid

    def sign_out(self, sid: str | None) -> None:
        with self._lock:
            self._sessions.pop(sid or "", None)

    def session(self, sid: str | None) -> Session | None:
        """The live session of this cookie, if any."""
        with self._lock:
            found = self._sessions.get(sid or "")
            if found is not None and found.expires < time.time():
                del self._sessions[sid or ""]
                return None
            return found

    def form_writer(
        self, sid: str | None, csrf: str, origin: str | None, referer: str | None, host: str
    ) -> Session:
        """The session allowed to make this form post; `Refused` when it is not."""
        if self.token is None:
            raise Refused(403, "the console is read-only: no CONSOLE_TOKEN is set")
        same_origin(origin, referer, host)
        found = self.session(sid)
        if found is None:
            raise Refused(401, "sign in with the console token first")
        if not csrf or not hmac.compare_digest(csrf.encode(), found.csrf.encode()):
            raise Refused(403, "bad or missing CSRF token: reload the page and try again")
        return found

    def api_writer(self, authorization: str | None, origin: str | None, host: str) -> str:
        """The token name of an API write (`Authorization: Bearer TOKEN`); `Refused` if none."""
        if self.token is None:
            raise Refused(403, "the console is read-only: no CONSOLE_TOKEN is set")
        if origin is not None:
            same_origin(origin, None, host)
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise Refused(401, "writes need Authorization: Bearer <CONSOLE_TOKEN>")
        if not self.token.matches(given.strip()):
            raise Refused(403, "wrong token")
        return self.token.name


def same_origin(origin: str | None, referer: str | None, host: str) -> None:
    """`Refused` unless the request says it comes from a page of this host."""
    source = origin if origin and origin != "null" else referer
    if not source:
        raise Refused(403, "cross-origin check failed: no Origin or Referer")
    if urlsplit(source).netloc.lower() != host.lower():
        raise Refused(403, "cross-origin request refused")
