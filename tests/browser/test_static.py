"""The dashboard's files as the API serves them (in-process; no browser needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.routers.dashboard import DASHBOARD_DIR


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    return TestClient(create_app(Settings(data_dir=tmp_path)))


def test_the_page_and_every_file_it_loads_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    loaded = re.findall(r'"(/static/[^"]+)"', page.text)
    for path in ("/static/app.js", "/static/vendor/uplot.iife.min.js", "/static/app.css"):
        assert path in loaded
    for path in loaded:
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.content == (DASHBOARD_DIR / path.removeprefix("/static/")).read_bytes()


def test_the_plotting_library_is_vendored_with_its_license() -> None:
    vendor = DASHBOARD_DIR / "vendor"
    banner = (vendor / "uplot.iife.min.js").read_text()[:200]
    version = re.search(r"\(v(\d+\.\d+\.\d+)\)", banner)
    assert version is not None, banner
    assert f"| {version.group(1)} |" in (vendor / "VENDORED.md").read_text()
    assert "MIT License" in (vendor / "LICENSE-uPlot").read_text()


def test_the_page_loads_nothing_from_another_origin() -> None:
    page = (DASHBOARD_DIR / "index.html").read_text()
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith(("/", "#", "data:")) for s in sources), sources


@pytest.mark.parametrize(
    "path",
    [
        "/static/../routers/dashboard.py",
        "/static/%2e%2e/routers/dashboard.py",
        "/static/..%2f..%2fmain.py",
        "/static/vendor",
        "/static/no-such-file.js",
        "/static/app.js%00.png",
        "/static/" + "a" * 300,
    ],
)
def test_nothing_outside_the_dashboard_is_served(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404


def test_the_dashboard_is_not_in_the_api_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path == "/" or path.startswith("/static")]
