"""/docs and /redoc load nothing from another host: every script, stylesheet and icon they
reference is served by Kinema itself (they work on a machine with no internet)."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from kinema.api.app import create_app
from kinema.settings import Settings

pytestmark = pytest.mark.unit
REFERENCES = re.compile(r"""<(?:script|link)\b[^>]*?\b(?:src|href)=["']([^"']+)["']""")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    # No lifespan: the pages and their assets need no services.
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), engines={"workers": 0})
    return TestClient(create_app(settings))


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_each_asset_a_page_references_is_local_and_served(client: TestClient, page: str) -> None:
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "https://" not in r.text and "http://" not in r.text, r.text
    urls = REFERENCES.findall(r.text)
    assert len(urls) >= (3 if page == "/docs" else 2), urls  # script (+ stylesheet) + icon
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000, url
        assert asset.headers["cache-control"].startswith("public")
    assert "/openapi.json" in r.text


def test_swagger_ui_asks_no_online_validator(client: TestClient) -> None:
    assert '"validatorUrl": null' in client.get("/docs").text


def test_only_the_pages_assets_are_served(client: TestClient) -> None:
    for name in ["core.py", "..%2F__init__.py", "missing.js"]:
        r = client.get(f"/docs/assets/{name}")
        assert r.status_code == 404, name
        assert "error" in r.json()


def test_the_oauth2_redirect_page_is_served(client: TestClient) -> None:
    r = client.get("/docs/oauth2-redirect")
    assert r.status_code == 200 and "oauth2" in r.text.lower()


def test_the_assets_ship_with_the_dependency() -> None:
    from kinema.api.docs import ASSETS, _assets_dir

    assert all((_assets_dir() / name).is_file() for name in ASSETS)
