"""A threaded HTTP server harness shared by every emulator, with fault injection and a request log."""

from __future__ import annotations

import contextlib
import json
import random
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Response:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    content_type: str = "application/json"
    #: a file to send instead of a body: (path, first byte, end), optionally at ``rate`` bytes/s
    file: tuple[Path, int, int] | None = None
    rate: float | None = None
    #: Content-Length to announce when it differs from what is sent (a connection cut mid-file)
    declared_length: int | None = None


@dataclass
class Scripted:
    """A fault aimed at the next ``times`` requests matching ``method`` and ``path`` (a regex).

    ``error``: answered 503 and not applied (a server fault); ``torn``: the request is applied, the
    answer torn (as a proxy cutting it); ``drop``: applied,
    then the connection dropped before any answer; ``invalid_utf8``: applied, and a byte that is
    not UTF-8 put into the answer; ``hook``: applied, then ``hook(request)`` runs before the answer
    goes (a test kills the client there, or cuts its database connections).
    """

    method: str
    path: str
    fault: str
    times: int = 1
    hook: Callable[[Request], None] | None = None
    #: matching requests to let through untouched first (aim at the third batch, say)
    after: int = 0
    fired: int = 0
    seen: int = 0


@dataclass
class Faults:
    """Faults to inject, each drawn per request from a seeded generator (reproducible runs).

    ``error_rate`` answers 500/502/503; ``throttle_storm`` answers the API's throttle signal for
    the next N requests; ``timeout_rate`` stalls past the client's timeout; ``reset_rate`` drops
    the connection; ``malformed_rate`` sends a torn JSON body; ``latency`` delays every answer.
    """

    error_rate: float = 0.0
    throttle_storm: int = 0
    timeout_rate: float = 0.0
    timeout_seconds: float = 3.0
    reset_rate: float = 0.0
    malformed_rate: float = 0.0
    latency: float = 0.0
    seed: int = 7
    script: list[Scripted] = field(default_factory=list)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


Handler = Callable[[Request], Response]


@dataclass
class LoggedRequest:
    method: str
    path: str
    status: int
    items: int | None  # batch size the handler saw, when it is a batch endpoint


class EmulatorServer:
    """Routes, auth and faults for an emulator; subclasses register routes in ``__init__``."""

    name = "emulator"
    #: the attributes that make up what the emulated service holds (the sandbox saves them between runs)
    state_attributes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, faults: Faults | None = None) -> None:
        self.faults = faults or Faults()
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.log: list[LoggedRequest] = []
        self.lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._fault_lock = threading.Lock()

    # -- what the service holds ----------------------------------------------------
    def export_state(self) -> dict[str, Any]:
        with self.lock:
            return {name: getattr(self, name) for name in self.state_attributes}

    def import_state(self, state: dict[str, Any]) -> None:
        with self.lock:
            for name in self.state_attributes:
                if name in state:
                    setattr(self, name, state[name])

    # -- routing -----------------------------------------------------------------
    def route(self, method: str, pattern: str, handler: Handler) -> None:
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")
        self.routes.append((method, regex, handler))

    def authorised(self, request: Request) -> bool:
        """Override: check the API's auth header."""
        return True

    def unauthorised(self, request: Request) -> Response:
        return Response(401, {"error": "unauthorised"})

    def throttled(self, request: Request) -> Response:
        """Override: the API's own throttle answer."""
        return Response(429, {"error": "rate limited"}, headers={"Retry-After": "1"})

    def server_error(self, request: Request, status: int) -> Response:
        return Response(status, {"error": "internal error"})

    def record(self, request: Request, status: int, items: int | None = None) -> None:
        with self.lock:
            self.log.append(LoggedRequest(request.method, request.path, status, items))

    # -- dispatch ----------------------------------------------------------------
    def _draw_fault(self) -> str | None:
        f = self.faults
        with self._fault_lock:
            if f.throttle_storm > 0:
                f.throttle_storm -= 1
                return "throttle"
            roll = f.rng.random()
            for kind, rate in (
                ("error", f.error_rate),
                ("timeout", f.timeout_rate),
                ("reset", f.reset_rate),
                ("malformed", f.malformed_rate),
            ):
                if roll < rate:
                    return kind
                roll -= rate
        return None

    def dispatch(self, request: Request) -> Response | None:
        """Answer ``request``; ``None`` means drop the connection."""
        if self.faults.latency:
            time.sleep(self.faults.latency)
        if not self.authorised(request):
            response = self.unauthorised(request)
            self.record(request, response.status)
            return response
        fault = self._draw_fault()
        if fault == "throttle":
            response = self.throttled(request)
            self.record(request, response.status)
            return response
        if fault == "error":
            response = self.server_error(request, self.faults.rng.choice([500, 502, 503]))
            self.record(request, response.status)
            return response
        if fault == "timeout":
            time.sleep(self.faults.timeout_seconds)
            self.record(request, 0)
            return None
        if fault == "reset":
            self.record(request, 0)
            return None
        if self._aimed(request, before=True) is not None:
            response = self.server_error(request, 503)
            self.record(request, response.status)
            return response
        for method, regex, handler in self.routes:
            match = regex.match(request.path)
            if match and method == request.method:
                request.params = match.groupdict()
                response = handler(request)
                if fault == "malformed":
                    # the handler's effect happened; only the answer is torn, as a proxy would
                    response = Response(response.status, raw=b'{"truncated": ', headers=response.headers)
                return self._scripted(request, response)
        return Response(404, {"error": f"no route {request.method} {request.path}"})

    def _aimed(self, request: Request, *, before: bool) -> Scripted | None:
        """The scripted fault this request meets: before the handler (``error``) or after (the rest)."""
        with self._fault_lock:
            for candidate in self.faults.script:
                if (candidate.fault == "error") != before:
                    continue
                if candidate.method != request.method or not re.search(candidate.path, request.path):
                    continue
                candidate.seen += 1
                if candidate.seen > candidate.after and candidate.fired < candidate.times:
                    candidate.fired += 1
                    return candidate
        return None

    def _scripted(self, request: Request, response: Response) -> Response | None:
        aimed = self._aimed(request, before=False)
        if aimed is None:
            return response
        if aimed.fault == "torn":
            return Response(response.status, raw=b'{"truncated": ', headers=response.headers)
        if aimed.fault == "drop":
            return None
        if aimed.fault == "invalid_utf8":
            payload = response.raw if response.raw is not None else json.dumps(response.body).encode()
            at = payload.find(b'": "')
            payload = payload[: at + 4] + b"\xff" + payload[at + 4 :] if at >= 0 else payload + b"\xff"
            return Response(response.status, raw=payload, headers=response.headers, content_type=response.content_type)
        if aimed.hook is not None:
            aimed.hook(request)
        return response

    # -- lifecycle ---------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        emulator = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out in two writes; with Nagle on, each answer waits ~40 ms for an ACK
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                try:
                    response = emulator.dispatch(request)
                except Exception as exc:  # an emulator bug must show, not hang the client
                    response = Response(500, {"error": f"emulator fault: {type(exc).__name__}: {exc}"})
                if response is None:
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if response.file is not None:
                    self._send_file(response)
                    return
                if response.raw is not None:
                    payload = response.raw
                elif response.body is None:
                    payload = b""
                else:
                    payload = json.dumps(response.body).encode()
                self.send_response(response.status)
                if payload:
                    self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(payload)))
                for key, value in response.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if payload:
                    self.wfile.write(payload)

            def _send_file(self, response: Response) -> None:
                assert response.file is not None
                path, start, end = response.file
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                declared = response.declared_length
                self.send_header("Content-Length", str(declared if declared is not None else end - start))
                for key, value in response.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                block = 1 << 16
                with contextlib.suppress(OSError), path.open("rb") as source:
                    source.seek(start)
                    left = end - start
                    while left > 0:
                        piece = source.read(min(block, left))
                        if not piece:
                            break
                        self.wfile.write(piece)
                        left -= len(piece)
                        if response.rate:
                            time.sleep(len(piece) / response.rate)
                if declared is not None:
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        class _Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 128

            def handle_error(self, request: Any, client_address: Any) -> None:
                return None  # a client that hung up (a killed worker) is not the emulator's fault

        self._httpd = _Server((host, port), _Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=self.name, daemon=True
        )
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        assert self._httpd is not None, "emulator not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> EmulatorServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
