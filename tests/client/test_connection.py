"""Where the client finds the server and its key: flags > environment > the files of
`backprop serve`'s data directory > the default address."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backprop_client.connection import DEFAULT_URL, record_server, resolve_connection

ENV = {"BACKPROP_URL": "http://env.example:9000/", "BACKPROP_API_KEY": "bp_env"}


@pytest.fixture
def served_dir(tmp_path: Path) -> Path:
    """A data directory as `backprop serve --port 8123` leaves it while running."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "api_key").write_text("bp_saved\n")
    record_server(data_dir, "127.0.0.1", 8123, pid=1)
    return data_dir


def test_flags_win_over_everything(served_dir: Path) -> None:
    connection = resolve_connection("http://flag:1", "bp_flag", served_dir, environ=ENV)
    assert (connection.url, connection.api_key) == ("http://flag:1", "bp_flag")
    assert (connection.url_source, connection.key_source) == ("--url", "--api-key")


def test_the_environment_wins_over_the_data_directory(served_dir: Path) -> None:
    connection = resolve_connection(data_dir=served_dir, environ=ENV)
    assert (connection.url, connection.api_key) == ("http://env.example:9000", "bp_env")


def test_the_data_directory_after_serve(served_dir: Path) -> None:
    connection = resolve_connection(data_dir=served_dir, environ={})
    assert (connection.url, connection.api_key) == ("http://127.0.0.1:8123", "bp_saved")
    assert connection.url_source == str(served_dir / "server.json")
    # … named by BACKPROP_DATA_DIR, as `backprop serve` itself reads it.
    named = resolve_connection(environ={"BACKPROP_DATA_DIR": str(served_dir)})
    assert named == connection


def test_defaults_without_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./.backprop here
    connection = resolve_connection(environ={})
    assert (connection.url, connection.api_key, connection.url_source) == (
        DEFAULT_URL,
        None,
        "default",
    )
    (tmp_path / ".backprop").mkdir()
    (tmp_path / ".backprop" / "api_key").write_text("bp_here\n")
    assert resolve_connection(environ={}).api_key == "bp_here"  # ./.backprop by default


def test_a_broken_server_file_falls_through_to_the_default(served_dir: Path) -> None:
    (served_dir / "server.json").write_text("{not json")
    assert resolve_connection(data_dir=served_dir, environ={}).url == DEFAULT_URL
    (served_dir / "server.json").write_text(json.dumps(["a list"]))
    assert resolve_connection(data_dir=served_dir, environ={}).url == DEFAULT_URL


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:8000"),  # every interface: reach it on loopback
        ("::", "http://[::1]:8000"),
        ("192.168.1.5", "http://192.168.1.5:8000"),
        ("fe80::1", "http://[fe80::1]:8000"),
    ],
)
def test_serve_records_an_address_a_client_can_use(tmp_path: Path, host: str, url: str) -> None:
    path = record_server(tmp_path, host, 8000, pid=42)
    assert json.loads(path.read_text()) == {"url": url, "pid": 42}
