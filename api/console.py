"""The operations console: a static single-page app in `console/static/`, served by this process at
/console (and / redirects there). It logs in and reads and steers everything through the same REST
API as any client; the page itself holds no trading logic and no secret.

The charts are drawn by plotly.js, served from the installed `plotly` Python package's own bundle
(`plotly/package_data/plotly.min.js`, pinned in requirements.txt): maintained, offline, nothing
fetched from a CDN at run time, no copy of it in this repository. Its standard bundle needs no
'unsafe-eval' for the SVG traces the console draws (candlesticks, lines, markers, gauges).

Every console response carries a strict Content-Security-Policy: scripts, styles and requests
from this origin only, no inline script, no framing. plotly.js writes its global CSS rules through
the CSSOM into an (empty) same-origin stylesheet the page links with the id the library looks for
(`plotly.js-style-global`), so it needs no inline <style>. The one stylesheet it still injects when
it loads (MapLibre's, for map traces the console never draws) is allowed by its hash alone
(PLOTLY_INJECTED_STYLE_HASH): a plotly upgrade that changes it shows up as a CSP violation in
tests/console.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from flask import Blueprint, Response, redirect, send_file, send_from_directory

STATIC_DIR = Path(__file__).resolve().parents[1] / "console" / "static"
# sha256 of the MapLibre stylesheet that plotly.js 4.1.1 (plotly 7.1.0 on PyPI) appends to <head>
# when it loads.
PLOTLY_INJECTED_STYLE_HASH = "'sha256-ji27qzEtxXZW+7dun6UwjHXJ18e6WAin1VvNtkzIE/o='"
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    f"style-src 'self' {PLOTLY_INJECTED_STYLE_HASH}",
    "img-src 'self'",
    "font-src 'self'",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# The page's own files change with the code: revalidate each time (cheap: 304s). The chart bundle
# changes only with the pinned package.
PAGE_CACHE_SECONDS = 0
BUNDLE_CACHE_SECONDS = 24 * 3600

console_bp = Blueprint("console", __name__)


def plotly_bundle() -> Path | None:
    """plotly.min.js inside the installed plotly package, located without importing plotly."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


@console_bp.after_request
def _security_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


@console_bp.get("/")
def root() -> Response:
    return redirect("/console/", code=302)


@console_bp.get("/console")
@console_bp.get("/console/")
def index() -> Response:
    return send_from_directory(STATIC_DIR, "index.html", max_age=PAGE_CACHE_SECONDS)


@console_bp.get("/console/static/<path:name>")
def static_file(name: str) -> Response:
    # send_from_directory refuses paths that leave STATIC_DIR (404).
    return send_from_directory(STATIC_DIR, name, max_age=PAGE_CACHE_SECONDS)


@console_bp.get("/console/vendor/plotly.min.js")
def plotly_js() -> Response:
    bundle = plotly_bundle()
    if bundle is None:  # the pinned requirement is missing: the page says the charts are unavailable
        return Response("plotly is not installed (pip install -r requirements.txt)\n", status=404,
                        mimetype="text/plain")
    return send_file(bundle, mimetype="text/javascript", max_age=BUNDLE_CACHE_SECONDS, conditional=True)
