"""Jinja2 environment of the UI: templates, filters for times and durations, error pages."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse
from tether.controlplane.ui.schema_client import PageError

TEMPLATE_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"

#: Run statuses after which nothing changes any more (no polling needed).
TERMINAL_STATUSES = frozenset({"SUCCESS", "FAILURE", "CANCELED"})


def format_time(epoch: float | None) -> str:
    """``2026-11-25 14:55:01`` (UTC), or an em dash for no time."""
    if epoch is None:
        return "—"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def format_clock(epoch: float | None) -> str:
    """``14:55:01.123`` (UTC), for event logs."""
    if epoch is None:
        return "—"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%H:%M:%S.%f")[:-3]


def format_duration(seconds: float | None) -> str:
    """``850ms``, ``12.3s``, ``4m 05s``, ``2h 03m``."""
    if seconds is None:
        return "—"
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        minutes, rest = divmod(int(seconds), 60)
        return f"{minutes}m {rest:02d}s"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h {rest // 60:02d}m"


def format_ago(epoch: float | None, now: float | None = None) -> str:
    """``5s ago``, ``3m ago``, ``2h ago``, ``4d ago``."""
    if epoch is None:
        return "never"
    delta = max((now if now is not None else time.time()) - epoch, 0.0)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if delta >= size:
            return f"{int(delta // size)}{unit} ago"
    return f"{int(delta)}s ago"


def pretty_json(value: Any) -> str:
    """Indented JSON for display and for the launchpad's editor."""
    return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False)


#: Largest form body accepted (a run config is small; this bounds what one request buffers).
MAX_FORM_BYTES = 1024 * 1024


async def form_fields(request: Request) -> dict[str, str]:
    """The fields of a URL-encoded form post (the only kind the UI's forms send); of a
    repeated name, the last value (see :func:`form_items` for all of them).

    Raises:
        PageError: see :func:`form_items`.
    """
    return dict(await form_items(request))


async def form_items(request: Request) -> list[tuple[str, str]]:
    """The ``(name, value)`` pairs of a URL-encoded form post, in order, repeats kept.

    Parsed here rather than with Starlette's ``request.form()``, which needs the
    python-multipart package for no benefit to these forms. The body is read as it streams
    in and refused once past :data:`MAX_FORM_BYTES`, so a huge post is never held whole.

    Raises:
        PageError: the body is too large, not URL-encoded, or not UTF-8.
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind not in ("", "application/x-www-form-urlencoded"):
        raise PageError(f"expected a URL-encoded form, got {kind!r}", 415)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise PageError(
                f"The form is over the limit of {MAX_FORM_BYTES} bytes of a UI form; "
                "nothing was done.",
                413,
            )
    try:
        # A URL-encoded body is ASCII; its %-escapes must decode as UTF-8. Replacing bad
        # bytes would act on text the user never sent.
        return parse_qsl(
            bytes(body).decode("ascii"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
        )
    except UnicodeError:
        raise PageError("the form is not valid UTF-8 URL-encoded text", 400) from None


def is_web_url(value: Any) -> bool:
    """Whether ``value`` is an absolute http(s) URL: the only kind the UI links to or reads.

    A presigned URL comes from the agent; a ``javascript:`` or ``data:`` one (a bug or a
    hostile agent) must never become a link a user clicks.
    """
    if not isinstance(value, str):
        return False
    parts = urlsplit(value.strip())
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def select_web_urls(pieces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pieces of a presign answer whose ``url`` is http(s) (see :func:`is_web_url`)."""
    return [piece for piece in pieces if is_web_url(piece.get("url"))]


def asset_href(path: list[str]) -> str:
    """The page of the asset with key ``path``: each component percent-quoted."""
    return "/assets/" + asset_tail(path)


def asset_tail(path: list[str]) -> str:
    """An asset key as a URL's tail: its components percent-quoted, joined by ``/``."""
    return "/".join(quote(part, safe="") for part in path)


def asset_key(path: list[str]) -> str:
    """The user string of an asset key: its components joined by ``/``."""
    return "/".join(path)


def format_number(value: float) -> str:
    """A chart label: an integer as is, else up to 4 significant digits."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def format_chart_time(epoch: float) -> str:
    """``11-25 14:55`` (UTC), a chart's time-axis label."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%m-%d %H:%M")


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=select_autoescape(["html", "svg"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        time=format_time,
        clock=format_clock,
        duration=format_duration,
        ago=format_ago,
        pretty_json=pretty_json,
        is_web_url=is_web_url,
        select_web_urls=select_web_urls,
        asset_href=asset_href,
        asset_key=asset_key,
        asset_tail=asset_tail,
        number=format_number,
        chart_time=format_chart_time,
    )
    env.globals["TERMINAL_STATUSES"] = TERMINAL_STATUSES
    return env


ENVIRONMENT = _environment()


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render ``template`` with ``context`` (plus ``request`` and ``now``) as an HTML response."""
    # Every form and htmx request of the page carries this (see .sessions).
    csrf_token = getattr(request.state, "csrf_token", "")
    html = ENVIRONMENT.get_template(template).render(
        request=request, now=time.time(), csrf_token=csrf_token, **context
    )
    return HTMLResponse(html, status_code=status_code)


def render_error(request: Request, error: PageError) -> HTMLResponse:
    """The error page (or, for an htmx request, an inline error box) for ``error``."""
    template = "_error.html" if request.headers.get("hx-request") else "error.html"
    return render(request, template, status_code=error.status, error=error)
