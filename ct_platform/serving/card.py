"""`GET /v2/models/{name}/card`: the model card shipped inside the served bundle.

The card is written at export (`governance.card`) as `card.md` and `card.html` in the
bundle, sealed by its manifest; the server only reads the file of the model it serves.
Markdown by default; HTML with `?format=html` or an `Accept` header preferring text/html.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from ct_platform.serving.transport import HttpError

CARD_FILES = {"markdown": ("card.md", "text/markdown"), "html": ("card.html", "text/html")}


def card_response(bundle_dir: Path, version: str, request: Request) -> Response:
    """The card of the bundle in `bundle_dir`, in the format the request asks for.

    Raises:
        HttpError: 400 for an unknown `format`, 404 when the bundle has no card.
    """
    file_name, media_type = CARD_FILES[_wanted_format(request)]
    try:
        content = (bundle_dir / file_name).read_bytes()
    except FileNotFoundError:
        raise HttpError(
            404,
            "NOT_FOUND",
            f"the bundle of version {version} has no model card ({file_name}): it was "
            "exported before cards existed; re-export it to add one",
        ) from None
    return Response(content, media_type=f"{media_type}; charset=utf-8")


def _wanted_format(request: Request) -> str:
    asked = request.query_params.get("format")
    if asked is not None:
        if asked not in CARD_FILES:
            raise HttpError(
                400, "BAD_REQUEST", f"format {asked!r} must be one of {sorted(CARD_FILES)}"
            )
        return asked
    accept = request.headers.get("accept", "")
    return "html" if "text/html" in accept else "markdown"
