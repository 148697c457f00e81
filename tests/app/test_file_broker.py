"""The embedded (filesystem) broker: messages appear whole, and a bad file is no crash."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from queue import Empty

import pytest
from kombu import Connection

from app.config import Settings
from app.file_broker import PARTIAL_SUFFIX, Transport
from app.queue import make_celery

MESSAGES = 300


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


def _connection(settings: Settings) -> Connection:
    connection = make_celery(settings).connection_for_write()
    assert isinstance(connection.transport, Transport)  # the config selects our class
    return connection


def test_a_consumer_polling_while_messages_are_sent_reads_every_one_whole(
    settings: Settings,
) -> None:
    """The stock transport makes the file before writing its body: a consumer polling in
    between read an empty message and the worker died of a JSONDecodeError."""
    received: list[object] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            with _connection(settings) as connection:
                channel = connection.default_channel
                deadline = time.monotonic() + 60
                while len(received) < MESSAGES and time.monotonic() < deadline:
                    try:
                        received.append(channel._get("cpu"))
                    except Empty:
                        time.sleep(0.0005)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    with _connection(settings) as connection:
        channel = connection.default_channel
        for number in range(MESSAGES):
            channel._put("cpu", {"number": number, "body": "x" * 4096})
    consumer.join(90)

    assert not errors, errors
    assert sorted(message["number"] for message in received) == list(range(MESSAGES))  # type: ignore[index]
    assert not list((settings.broker_dir / "queue").glob(f"*{PARTIAL_SUFFIX}"))


def test_an_unreadable_message_file_is_dropped_and_the_next_one_delivered(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with _connection(settings) as connection:
        channel = connection.default_channel
        bad = settings.broker_dir / "queue" / "0_bad.cpu.msg"  # sorts before any sent message
        bad.write_bytes(b"")
        channel._put("cpu", {"number": 1})

        with pytest.raises(Empty):
            channel._get("cpu")
        assert "unreadable message" in caplog.text
        assert channel._get("cpu") == {"number": 1}
