"""What every emulator shares: the HTTP(S) server, the request log, latency and the fault queue.

An emulator is an object holding in-memory state plus a `handle(Request) -> Response`
method; `Emulator` runs it on a `ThreadingHTTPServer` bound to 127.0.0.1. Details that
matter for honest measurements and for the real SDK clients:

* HTTP/1.1 keep-alive with Content-Length on every answer and `disable_nagle_algorithm`
  (otherwise each response stalls ~40 ms on Nagle + delayed ACK);
* the TLS handshake runs in the connection's worker thread, never in the accept loop;
* `stop()` closes the listening socket AND every open connection (a pooled keep-alive
  connection would otherwise keep being answered), so clients see "connection refused";
  `start()` again rebinds the same port;
* faults in mode "hang" hold the request until the emulator stops or is reset, so neither blocks.
"""

from __future__ import annotations

import gzip
import json
import re
import socket
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from dlp.emulator.certs import get_certs

HOST = "127.0.0.1"

# Headers kept in the request log (lower-case); Authorization is kept but redacted.
LOGGED_HEADERS = (
    "authorization", "content-type", "content-encoding", "content-length", "accept", "user-agent",
    "operation-id", "x-ms-client-request-id", "x-identity-header", "metadata", "retry-after",
    "x-ms-return-client-request-id", "if-match", "x-ms-date",
)

_DEFAULT_CODES = {
    400: "BadRequest", 401: "AuthenticationFailed", 403: "AuthorizationFailed", 404: "NotFound",
    408: "RequestTimeout", 409: "Conflict", 412: "PreconditionFailed", 413: "RequestEntityTooLarge",
    429: "TooManyRequests", 500: "InternalServerError", 502: "BadGateway", 503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


def arm_error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The error body ARM (and most Azure data planes) send: {"error": {"code", "message"}}."""
    return {"error": {"code": code, "message": message, **extra}}



def drop_connection(handler: BaseHTTPRequestHandler, mode: str, release: threading.Event,
                    stopping: threading.Event) -> None:
    """A fault that never answers: "hang" holds the connection until released or stopped, then (as for
    "close") drops it without a response."""
    if mode == "hang":
        while not release.is_set() and not stopping.wait(0.05):
            pass
    handler.close_connection = True
    try:
        handler.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass

@dataclass
class Request:
    """One parsed HTTP request as an emulator's `handle` sees it."""

    method: str
    path: str                      # percent-decoded path, original casing
    query: dict[str, str]          # first value of each parameter (names as sent)
    headers: Mapping[str, str]     # case-insensitive (email.message.Message)
    body: bytes
    base_url: str                  # e.g. https://127.0.0.1:43123, for Location-style headers

    def param(self, name: str, default: str = "") -> str:
        """Query parameter by case-insensitive name (ARM treats `$skipToken`/`$skiptoken` alike)."""
        for key, value in self.query.items():
            if key.lower() == name.lower():
                return value
        return default

    def json(self) -> Any:
        """The body as JSON, gunzipped when Content-Encoding says gzip; raises ValueError when it is not JSON."""
        return decode_json_body(self.body, self.headers.get("Content-Encoding", ""))

    @property
    def bearer(self) -> str | None:
        auth = self.headers.get("Authorization", "") or ""
        scheme, _, token = auth.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def decode_json_body(body: bytes, content_encoding: str = "") -> Any:
    if "gzip" in (content_encoding or "").lower():
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError) as exc:
            raise ValueError(f"body is not valid gzip: {exc}") from exc
    try:
        return json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"body is not valid JSON: {exc}") from exc


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
        body = json.dumps(payload, separators=(",", ":")).encode()
        return cls(status, body, {"Content-Type": "application/json; charset=utf-8", **(headers or {})})

    @classmethod
    def error(cls, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
        return cls.json(status, arm_error(code, message), headers)


@dataclass
class RequestRecord:
    """One request as received: what tests assert on (`status` is filled in once answered; 0 = dropped)."""

    service: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    time: float
    status: int | None = None

    def json(self) -> Any:
        return decode_json_body(self.body, self.headers.get("content-encoding", ""))


class RequestLog:
    """Thread-safe list of RequestRecord with small query helpers."""

    def __init__(self) -> None:
        self._records: list[RequestRecord] = []
        self._lock = threading.Lock()

    def append(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def reset(self) -> None:
        with self._lock:
            self._records.clear()

    def filter(self, method: str | None = None, path_contains: str | None = None,
               service: str | None = None, status: int | None = None) -> list[RequestRecord]:
        """Records matching every given criterion; `path_contains` ignores case (ARM paths do)."""
        needle = path_contains.lower() if path_contains else None
        with self._lock:
            records = list(self._records)
        return [r for r in records
                if (method is None or r.method == method.upper())
                and (needle is None or needle in r.path.lower())
                and (service is None or r.service == service)
                and (status is None or r.status == status)]

    def count(self, method: str | None = None, path_contains: str | None = None,
              service: str | None = None, status: int | None = None) -> int:
        return len(self.filter(method, path_contains, service, status))

    def last(self, method: str | None = None, path_contains: str | None = None,
             service: str | None = None) -> RequestRecord | None:
        found = self.filter(method, path_contains, service)
        return found[-1] if found else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def __iter__(self) -> Iterator[RequestRecord]:
        with self._lock:
            return iter(list(self._records))


FAULT_MODES = ("respond", "hang", "close", "pass")


@dataclass
class Fault:
    """A canned misbehaviour for the next `times` matching requests (None: forever)."""

    method: str | None
    path: re.Pattern[str]
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    times: int | None = 1
    delay: float = 0.0
    mode: str = "respond"
    service: str | None = None
    skip: int = 0                    # let this many matching requests through first
    hits: int = 0
    gate: threading.Event | None = None   # wait for it (or the emulator stopping) before acting

    def matches(self, method: str, path: str, service: str) -> bool:
        return ((self.method is None or self.method.upper() == method)
                and (self.service is None or self.service == service)
                and bool(self.path.search(path)))

    def response(self) -> Response:
        body = self.body
        if body is None and self.status >= 400:
            body = arm_error(_DEFAULT_CODES.get(self.status, "Error"), f"Injected fault ({self.status}).")
        if isinstance(body, (dict, list)):
            return Response.json(self.status, body, self.headers)
        raw = body.encode() if isinstance(body, str) else (body or b"")
        return Response(self.status, raw, dict(self.headers))


class FaultQueue:
    """Faults matched in the order added; each match consumes one of its `times`."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, method: str | None = None, path: str = r".*", status: int = 500,
            headers: Mapping[str, str] | None = None, body: Any = None, times: int | None = 1,
            delay: float = 0.0, mode: str = "respond", service: str | None = None, skip: int = 0,
            gate: threading.Event | None = None) -> Fault:
        """Queue a fault. `path` is a regex searched (case-insensitively) in the decoded path, query excluded.

        `mode`: "respond" answers status/headers/body; "hang" never answers (until the emulator
        stops); "close" drops the connection without a response; "pass" answers as usual, but the answer
        (of the state when the request arrived) is sent only after the wait.
        `delay` waits before acting; so does `gate`, until a test sets it (a request held in flight).
        `service` restricts the fault to one log label (e.g. "graph" or "arm-op" on the ARM server).
        `skip` lets that many matching requests through before the fault starts (e.g. fail the 2nd chunk).
        """
        if mode not in FAULT_MODES:
            raise ValueError(f"mode must be one of {FAULT_MODES}")
        fault = Fault(method, re.compile(path, re.IGNORECASE), status, dict(headers or {}), body,
                      times, delay, mode, service, skip, gate=gate)
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, method: str, path: str, service: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path, service):
                    if fault.skip > 0:
                        fault.skip -= 1
                        continue
                    fault.hits += 1
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def __len__(self) -> int:
        with self._lock:
            return len(self._faults)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"      # keep-alive: every answer carries Content-Length
    disable_nagle_algorithm = True     # no 40 ms Nagle/delayed-ACK stall per response
    timeout = 120                      # reap idle keep-alive connections eventually
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = do_GET

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        emulator = self.server.emulator
        stopping = self.server.stopping
        body = self._read_body()
        split = urlsplit(self.path)
        request = Request(self.command, unquote(split.path),
                          dict(parse_qsl(split.query, keep_blank_values=True)),
                          self.headers, body, emulator.url)
        service = emulator.classify(request)
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() in LOGGED_HEADERS}
        if "authorization" in headers:
            headers["authorization"] = headers["authorization"].split(" ")[0] + " ***"
        record = RequestRecord(service, self.command, request.path, dict(request.query), headers, body, time.time())
        emulator.log.append(record)

        fault = emulator.faults.take(self.command, request.path, service)
        response = None
        if fault is None or fault.mode == "pass":       # "pass": answered now, the answer held in flight
            try:
                response = emulator.handle(request)
            except Exception as exc:
                emulator.errors.append(traceback.format_exc())
                response = Response.error(500, "InternalServerError", f"Emulator bug: {exc!r}")
        if fault is not None:
            if fault.delay:
                stopping.wait(fault.delay)
            while fault.gate is not None and not fault.gate.wait(0.05) and not stopping.is_set():
                pass
            if fault.mode in ("hang", "close"):
                record.status = 0
                drop_connection(self, fault.mode, emulator.hang_release, stopping)
                return
            if fault.mode == "respond":
                response = fault.response()
        assert response is not None
        if emulator.latency:
            stopping.wait(emulator.latency)
        record.status = response.status
        self._write(response)

    def _write(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if response.body and self.command != "HEAD":
            self.wfile.write(response.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, emulator: Emulator, address: tuple[str, int], ssl_context: Any) -> None:
        self.emulator = emulator
        self.ssl_context = ssl_context
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is not None:
            request.settimeout(10)  # a client that never completes the handshake does not pin a thread
            request = self.ssl_context.wrap_socket(request, server_side=True)
            request.settimeout(None)
        with self._connections_lock:
            if self.stopping.is_set():
                request.close()
                return
            self._connections.add(request)
        try:
            self.RequestHandlerClass(request, client_address, self)
        finally:
            with self._connections_lock:
                self._connections.discard(request)
            super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Client-side disconnects and failed handshakes are normal here: stay quiet."""

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Emulator:
    """Base of every emulated service: lifecycle, log, faults, latency.

    Subclasses set `name` and `scheme` and implement `handle`; `classify` labels a
    request in the log (e.g. ARM tells "arm", "graph" and "arm-op" apart).
    """

    name = "emulator"
    scheme = "https"

    def __init__(self, *, port: int = 0, latency: float = 0.0) -> None:
        self.log = RequestLog()
        self.faults = FaultQueue()
        self.latency = latency            # seconds added before every answer (not to faults that hang/close)
        self.errors: list[str] = []       # tracebacks of emulator bugs (answered as 500): tests may assert empty
        self.hang_release = threading.Event()   # set by reset(): requests held by "hang" faults are dropped
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lifecycle = threading.Lock()

    # lifecycle -------------------------------------------------------------------------------
    def start(self) -> Emulator:
        """Listen (again) on 127.0.0.1; the first start picks a free port, later starts reuse it."""
        with self._lifecycle:
            if self._server is not None:
                return self
            context = get_certs().server_context() if self.scheme == "https" else None
            server = _Server(self, (HOST, self._port), context)
            self._port = server.server_address[1]
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                      name=f"emulator-{self.name}-{self._port}", daemon=True)
            self._server, self._thread = server, thread
            thread.start()
        return self

    def stop(self) -> None:
        """Refuse connections from now on (state, log and port are kept for `start`)."""
        with self._lifecycle:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        server.stopping.set()           # wakes "hang" faults and latency waits
        server.shutdown()
        server.server_close()
        server.close_connections()
        if thread is not None:
            thread.join(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()

    close = stop

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"{self.scheme}://{HOST}:{self._port}"

    # behaviour ------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget requests, faults, latency, errors and service state (between tests)."""
        self.faults.clear()
        self.hang_release.set()
        self.hang_release = threading.Event()
        self.log.reset()
        self.latency = 0.0
        self.errors.clear()
        self.reset_state()

    def reset_state(self) -> None:
        """Subclasses clear their in-memory data here."""

    def classify(self, request: Request) -> str:
        return self.name

    def handle(self, request: Request) -> Response:
        raise NotImplementedError
