"""Start the real Azurite (npm) for Table/Queue/Blob storage on free loopback ports.

Azurite is not emulated here: it is Microsoft's own emulator. CI installs it with
`npm install --prefix <repo>/.ci/node azurite@3`; `find_azurite()` looks there first, then on PATH.
`start()` raises AzuriteError with Azurite's output when it cannot run: callers must fail
loudly, never skip, because the storage paths would otherwise go untested.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
REPO = Path(__file__).resolve().parents[2]


class AzuriteError(RuntimeError):
    pass


def find_azurite(repo: Path = REPO) -> list[str] | None:
    """Command that runs Azurite, or None when it is not installed."""
    local = repo / ".ci" / "node" / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return [str(local)]
    on_path = shutil.which("azurite")
    return [on_path] if on_path else None


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Azurite:
    """One Azurite process (in-memory, loose, any api-version); `connection_string` once started."""

    def __init__(self, command: list[str] | None = None) -> None:
        self.command = command or find_azurite()
        self.blob_port = self.queue_port = self.table_port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._folder: str | None = None

    @property
    def connection_string(self) -> str:
        base = "http://127.0.0.1"
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
                f"BlobEndpoint={base}:{self.blob_port}/{ACCOUNT};QueueEndpoint={base}:{self.queue_port}/{ACCOUNT};"
                f"TableEndpoint={base}:{self.table_port}/{ACCOUNT};")

    def _output(self) -> str:
        path = Path(self._folder or "") / "azurite.out"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def start(self, timeout: float = 60.0) -> Azurite:
        if self.command is None:
            raise AzuriteError("Azurite is not installed: run `npm install --prefix .ci/node azurite@3`")
        self.blob_port, self.queue_port, self.table_port = _free_ports(3)
        self._folder = tempfile.mkdtemp(prefix="dlp-azurite-")
        args = [*self.command, "--blobHost", "127.0.0.1", "--blobPort", str(self.blob_port),
                "--queueHost", "127.0.0.1", "--queuePort", str(self.queue_port),
                "--tableHost", "127.0.0.1", "--tablePort", str(self.table_port),
                "--inMemoryPersistence", "--skipApiVersionCheck", "--loose",   # (--location refuses in-memory)
                "--silent", "--disableTelemetry"]
        with open(Path(self._folder) / "azurite.out", "wb") as out:
            process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=self._folder)
        self._process = process
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                output = self._output()
                self.stop()
                raise AzuriteError(f"Azurite exited with {process.returncode}: {output}")
            if all(_listening(p) for p in (self.blob_port, self.queue_port, self.table_port)):
                return self
            time.sleep(0.1)
        output = self._output()
        self.stop()
        raise AzuriteError(f"Azurite did not listen within {timeout:.0f} s: {output}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self._folder:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
