"""A real S3 protocol server for the tests: moto's standalone server on a loopback port,
standing in for AWS S3, MinIO or Ceph. One bucket per test keeps tests apart."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.servers import free_port, missing, wait_until

# moto accepts any credentials; botocore only needs some to sign requests.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "backprop-test",
    "AWS_SECRET_ACCESS_KEY": "backprop-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class S3Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @classmethod
    def start(cls, directory: Path) -> S3Server:
        binary = shutil.which("moto_server", path=str(Path(sys.executable).parent))
        if binary is None:
            missing("moto_server", "pip install 'moto[server]' (the dev extra)")
        port = free_port()
        log_path = directory / "moto.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [binary, "-H", "127.0.0.1", "-p", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = cls(process, port, log_path)
        try:
            wait_until(server._up, 60, what="moto_server to answer")
        except BaseException:
            server.stop()
            raise
        return server

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _up(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"moto_server exited:\n{self.log_tail()}")
        try:
            return httpx.get(self.endpoint_url + "/moto-api/", timeout=2).status_code < 500
        except httpx.TransportError:
            return False

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def new_bucket(self) -> str:
        """A fresh, empty bucket; returns its `s3://` URL (with a prefix, as users give it)."""
        import boto3

        name = f"backprop-{uuid.uuid4().hex[:12]}"
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        )
        client.create_bucket(Bucket=name)
        return f"s3://{name}/backprop"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
