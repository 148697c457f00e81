"""The web dashboard: `/` serves its page, `/static/...` its scripts, styles and the vendored
plotting library (app/dashboard/). Not part of the API, so not in the OpenAPI schema.

The page itself holds no data: it asks for an API key once, keeps it in the browser's
storage and calls the `/v1` API with it, like any other client.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse

DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"

# The page runs only its own files: no inline scripts, nothing from another origin, no
# framing. Blob URLs are for the model download link.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# Revalidate on every load (FileResponse sends an ETag), so an upgrade is seen at once.
NO_CACHE = {"Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


@router.get("/")
def dashboard_page() -> FileResponse:
    return FileResponse(DASHBOARD_DIR / "index.html", headers={**SECURITY_HEADERS, **NO_CACHE})


@router.get("/static/{path:path}")
def dashboard_file(path: str) -> FileResponse:
    return FileResponse(static_file(path), headers={**SECURITY_HEADERS, **NO_CACHE})


def static_file(path: str) -> Path:
    """The dashboard's file at `path`; 404 for anything else, including paths that climb
    out of the dashboard's directory."""
    try:
        file = (DASHBOARD_DIR / path).resolve()
        found = file.is_relative_to(DASHBOARD_DIR) and file.is_file()
    except (OSError, ValueError):  # a NUL byte or an over-long name names no file either
        found = False
    if not found:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dashboard file {path!r}")
    return file
