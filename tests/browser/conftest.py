"""Browser fixtures: Debian's `chromium` driven by Playwright (never a browser download),
one live `backprop serve` per module, and a fresh browser context (empty localStorage) per
test. A missing `chromium` skips these tests, or fails them under
`BACKPROP_REQUIRE_SERVICES=1` (as in CI)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, expect, sync_playwright

from tests.integration.deployments import EmbeddedDeployment
from tests.integration.processes import PROCESSES, Processes, pytest_runtest_makereport
from tests.servers import require_binary

__all__ = ["pytest_runtest_makereport"]  # attaches the server's log to a failed test

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = "BACKPROP_TEST_ARTIFACTS"
# Two busy cores: page updates can take a while; a real failure still ends the test.
UI_TIMEOUT_MS = 30_000
VIEWPORT = {"width": 1280, "height": 860}
SCREENSHOT = "screenshot"  # the user property that names a kept screenshot
EXPECTED_HTTP_ERROR = "Failed to load resource: the server responded with a status of 4"


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests keep screenshots and downloads: `$BACKPROP_TEST_ARTIFACTS`, default
    `artifacts/` at the repository root (ignored by git)."""
    directory = Path(os.environ.get(ARTIFACTS) or REPO_ROOT / "artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = require_binary("chromium", "apt-get install chromium")
    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedDeployment]:
    """`backprop serve` on a fresh data directory, shared by the module's tests."""
    root = tmp_path_factory.mktemp("dashboard")
    (root / "logs").mkdir()
    processes = Processes(root / "logs")
    try:
        deployment = EmbeddedDeployment(processes, root)
        try:
            yield deployment
        finally:
            deployment.close()
    finally:
        processes.stop_all()


@dataclass
class Dashboard:
    page: Page
    url: str  # the server's base URL; the dashboard is at `url + "/"`
    api_key: str
    server: EmbeddedDeployment
    artifacts: Path
    test: pytest.Item
    problems: list[str] = field(default_factory=list)  # console errors, uncaught exceptions

    def open(self, route: str = "") -> None:
        """Open the dashboard (at a hash route) and enter the key, as a new user does."""
        self.page.goto(f"{self.url}/{route}")
        self.page.fill("#api-key", self.api_key)
        self.page.click("button:has-text('Save key')")

    def screenshot(self, name: str, *, full_page: bool = False) -> Path:
        """Save a screenshot in the artifacts directory; the run's summary lists it."""
        path = self.artifacts / name
        self.page.screenshot(path=path, full_page=full_page)
        self.test.user_properties.append((SCREENSHOT, str(path)))
        return path


@pytest.fixture
def dashboard(
    request: pytest.FixtureRequest,
    browser: Browser,
    server: EmbeddedDeployment,
    artifacts_dir: Path,
) -> Iterator[Dashboard]:
    request.node.stash[PROCESSES] = server.processes
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    api_key = (server.data_dir / "api_key").read_text().strip()
    url = str(server.client.http.base_url).rstrip("/")
    opened = Dashboard(page, url, api_key, server, artifacts_dir, request.node)

    def console(message: ConsoleMessage) -> None:
        # The browser logs every 4xx the page asked for; the page shows those itself.
        if message.type == "error" and not message.text.startswith(EXPECTED_HTTP_ERROR):
            opened.problems.append(f"console: {message.text}")

    def uncaught(error: Error) -> None:
        opened.problems.append(f"uncaught: {error}")

    page.on("console", console)
    page.on("pageerror", uncaught)
    try:
        yield opened
    finally:
        context.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List the screenshots that the browser tests kept (also under pytest-xdist, whose
    workers send user properties with their reports)."""
    paths = [
        value
        for reports in terminalreporter.stats.values()
        for report in reports
        for name, value in getattr(report, "user_properties", ())
        if name == SCREENSHOT
    ]
    if paths:
        terminalreporter.write_sep("-", "dashboard screenshots")
        for path in dict.fromkeys(paths):
            terminalreporter.write_line(path)
