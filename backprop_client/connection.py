"""Where the server is and which key to send, so that `backprop submit` works right after
`backprop serve` with no set-up.

Each comes from the first of: a flag (an argument here), an environment variable
(`BACKPROP_URL`, `BACKPROP_API_KEY`), the files `backprop serve` writes in its data
directory (`server.json`, `api_key`), and for the URL the documented default address.
This module is the only place in the client that reads the environment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_DATA_DIR = ".backprop"
SERVER_FILE = "server.json"  # {"url": ..., "pid": ...} while `backprop serve` runs
KEY_FILE = "api_key"


@dataclass(frozen=True)
class Connection:
    url: str
    api_key: str | None
    # Where each came from ("--url", "BACKPROP_URL", a file's path, "default"), for messages.
    url_source: str
    key_source: str | None


def resolve_connection(
    url: str | None = None,
    api_key: str | None = None,
    data_dir: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Connection:
    """The server URL and API key: arguments > environment > data directory files > default.

    Args:
        url, api_key: explicit values (the CLI's `--url`, `--api-key`), used when given.
        data_dir: `backprop serve`'s data directory; default `BACKPROP_DATA_DIR`, else
            `./.backprop`, as the server itself resolves it.
        environ: the environment to read (default `os.environ`).
    """
    env = os.environ if environ is None else environ
    directory = Path(data_dir or env.get("BACKPROP_DATA_DIR") or DEFAULT_DATA_DIR)
    url, url_source = _first(
        (url, "--url"),
        (env.get("BACKPROP_URL"), "BACKPROP_URL"),
        (_served_url(directory / SERVER_FILE), str(directory / SERVER_FILE)),
        (DEFAULT_URL, "default"),
    )
    api_key, key_source = _first(
        (api_key, "--api-key"),
        (env.get("BACKPROP_API_KEY"), "BACKPROP_API_KEY"),
        (_read_key(directory / KEY_FILE), str(directory / KEY_FILE)),
    )
    return Connection(str(url).rstrip("/"), api_key, str(url_source), key_source)


def record_server(data_dir: Path, host: str, port: int, pid: int) -> Path:
    """Write `<data_dir>/server.json` for the client commands (`backprop serve` calls this
    at start and deletes the file on exit); its path."""
    local = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    address = f"[{local}]" if ":" in local else local  # an IPv6 address goes in brackets
    path = data_dir / SERVER_FILE
    path.write_text(json.dumps({"url": f"http://{address}:{port}", "pid": pid}) + "\n")
    return path


def _first(*candidates: tuple[str | None, str]) -> tuple[str | None, str | None]:
    for value, source in candidates:
        if value:
            return value, source
    return None, None


def _served_url(path: Path) -> str | None:
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    url = recorded.get("url") if isinstance(recorded, dict) else None
    return url if isinstance(url, str) else None


def _read_key(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
