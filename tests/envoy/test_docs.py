"""GET /openapi.json and /docs on a real edge: served by Envoy itself, with no token.

The edge's services are down here on purpose: the document and the page must not
depend on them (nor on the transcoder, which refuses every path it does not know).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable

import httpx
import pytest

from tests.envoy.conftest import ROOT, SERVICES, Envoy, status_body
from tests.support import free_ports

pytestmark = pytest.mark.integration

GENERATED = ROOT / "generated"


@pytest.fixture(scope="module")
def docs_edge(envoy_factory: Callable[[], Envoy]) -> Envoy:
    [dead] = free_ports(1)
    envoy = envoy_factory()
    envoy.start(envoy.render({name: f"127.0.0.1:{dead}" for name in SERVICES}))
    return envoy


def test_openapi_json_is_the_generated_document_with_no_token(docs_edge: Envoy) -> None:
    response = httpx.get(f"{docs_edge.edge_url}/openapi.json", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == json.loads((GENERATED / "openapi.json").read_text())
    assert response.headers["x-request-id"]


def test_docs_page_and_every_asset_it_names_are_served(docs_edge: Envoy) -> None:
    page = httpx.get(f"{docs_edge.edge_url}/docs", timeout=5)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "https://" not in page.text  # no CDN
    for asset, kind in [
        ("swagger-ui-bundle.js", "text/javascript"),
        ("swagger-ui.css", "text/css"),
    ]:
        response = httpx.get(f"{docs_edge.edge_url}/docs/{asset}", timeout=5)
        assert response.status_code == 200
        assert response.headers["content-type"] == kind
        assert response.content == (GENERATED / "docs" / asset).read_bytes()


def test_other_methods_on_the_docs_paths_are_refused_not_served(docs_edge: Envoy) -> None:
    response = httpx.post(f"{docs_edge.edge_url}/openapi.json", json={}, timeout=5)
    assert response.status_code == 404
    assert status_body(response)["code"] == 5


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed (`apt-get install -y chromium`, as root)")
    return found


def test_docs_page_renders_every_operation_in_headless_chromium(docs_edge: Envoy) -> None:
    document = json.loads((GENERATED / "openapi.json").read_text())
    operations = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    with tempfile.TemporaryDirectory() as profile:
        command = [
            _chromium(), "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--no-first-run",
            f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--dump-dom",
            f"{docs_edge.edge_url}/docs",
        ]  # fmt: skip
        dom = subprocess.run(
            command, capture_output=True, text=True, timeout=90, check=True,
            env={**os.environ, "HOME": profile},
        ).stdout  # fmt: skip
    assert "airline-mesh REST API" in dom
    missing = [op for op in operations if f'id="operations-{op.split("_")[0]}-{op}"' not in dom]
    assert not missing, f"operations not on the page: {missing}"
