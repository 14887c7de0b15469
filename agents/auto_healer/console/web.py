"""The little HTTP the console needs on top of WSGI: a parsed request and a response."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from auto_healer.console.security import HEADERS, NO_STORE

MAX_BODY = 64 * 1024  # a form or a JSON body of the console is small


@dataclass(frozen=True)
class Request:
    """One request: method, path below the console's prefix, query, form (or JSON) fields."""

    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]
    cookies: dict[str, str]
    host: str
    secure: bool

    @classmethod
    def from_environ(cls, environ: dict[str, Any]) -> Request:
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        headers = {
            k[5:].replace("_", "-").lower(): str(v)
            for k, v in environ.items()
            if k.startswith("HTTP_")
        }
        headers["content-type"] = str(environ.get("CONTENT_TYPE", ""))
        form: dict[str, str] = {}
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        if method == "POST":
            try:
                size = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_BODY)
            except ValueError:
                size = 0
            body = environ["wsgi.input"].read(size) if size > 0 else b""
            form = _fields(body, headers["content-type"])
        jar = SimpleCookie()
        try:
            jar.load(headers.get("cookie", ""))
        except Exception:  # a malformed cookie header is no session
            jar = SimpleCookie()
        host = headers.get("host") or f"{environ.get('SERVER_NAME')}:{environ.get('SERVER_PORT')}"
        proto = headers.get("x-forwarded-proto") or environ.get("wsgi.url_scheme", "http")
        return cls(
            method=method,
            path=str(environ.get("PATH_INFO", "/")),
            query=query,
            form=form,
            headers=headers,
            cookies={k: m.value for k, m in jar.items()},
            host=host,
            secure=proto == "https",
        )


def _fields(body: bytes, content_type: str) -> dict[str, str]:
    if content_type.split(";")[0].strip() == "application/json":
        try:
            doc = json.loads(body or b"{}")
        except ValueError:
            return {}
        return {_text(k): _text(v) for k, v in doc.items()} if isinstance(doc, dict) else {}
    text = body.decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}


def _text(value: Any) -> str:
    """A JSON value as text a form could have sent: no lone surrogate (`\\ud800`)."""
    return str(value).encode("utf-8", "replace").decode()


@dataclass
class Response:
    """A response with the console's security headers; `no_store` on everything but assets."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    no_store: bool = True

    def wsgi(self, start_response: Any) -> Iterable[bytes]:
        phrase = HTTPStatus(self.status).phrase
        headers = [("Content-Type", self.content_type), *HEADERS, *self.headers]
        if self.no_store:
            headers.append(NO_STORE)
        headers.append(("Content-Length", str(len(self.body))))
        start_response(f"{self.status} {phrase}", headers)
        return [self.body]


def as_json(doc: Any, status: int = 200) -> Response:
    data = json.dumps(doc, indent=1, default=str).encode()
    return Response(status, data, "application/json")


def redirect(location: str, *headers: tuple[str, str]) -> Response:
    return Response(303, b"", "text/plain", [("Location", location), *headers])
