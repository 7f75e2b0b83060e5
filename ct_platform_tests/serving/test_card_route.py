"""GET /v2/models/{name}/card: the card file sealed in the served bundle, over real HTTP."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx

from ct_platform.serving.manifest import write_manifest
from ct_platform_tests.serving.conftest import MODEL_NAME, ThreadedServer, server_config

CARD_MD = "# Model card: bank\\_marketing version 1\n\n## Gates\n\n| gate | verdict |\n"
CARD_HTML = "<!doctype html><html><body><h1>Model card</h1></body></html>\n"


def test_card_is_served_in_the_format_asked(bundle_dir: Path, tmp_path: Path) -> None:
    carded = tmp_path / f"{MODEL_NAME}-v1"
    shutil.copytree(bundle_dir, carded)
    (carded / "card.md").write_text(CARD_MD)
    (carded / "card.html").write_text(CARD_HTML)
    write_manifest(carded)  # the card is part of the sealed bundle
    with ThreadedServer(server_config(carded, tmp_path / "home")) as server:
        route = f"{server.url}/v2/models/{MODEL_NAME}/card"
        markdown = httpx.get(route)
        html = httpx.get(route, headers={"accept": "text/html,application/xhtml+xml"})
        by_query = httpx.get(route, params={"format": "html"})
        unknown_format = httpx.get(route, params={"format": "pdf"})
        unknown_model = httpx.get(f"{server.url}/v2/models/other/card")

    assert markdown.status_code == 200 and markdown.text == CARD_MD
    assert markdown.headers["content-type"] == "text/markdown; charset=utf-8"
    assert html.text == by_query.text == CARD_HTML
    assert html.headers["content-type"] == "text/html; charset=utf-8"
    assert unknown_format.status_code == 400 and "'pdf'" in unknown_format.json()["error"]
    assert unknown_model.status_code == 404


def test_a_bundle_without_a_card_says_so(open_server: ThreadedServer) -> None:
    response = httpx.get(f"{open_server.url}/v2/models/{MODEL_NAME}/card")
    assert response.status_code == 404
    assert "has no model card" in response.json()["error"]
