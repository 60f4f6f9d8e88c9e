"""The server process: one asyncio event loop serving WebSocket clients (ws.py) and plain HTTP GETs
(/health, /metrics, the browser client's static files) on one port, in front of one `Batcher`.

The event loop only moves bytes, parses messages and buffers audio; every call into the model runs on
the batcher's worker thread. HTTP requests are answered in websockets' `process_request` hook, before
any WebSocket handshake: no second web framework is needed for a handful of GET routes.

    server = SeparationServer(processor, ServerConfig(port=0), model_name="tiny")
    await server.start()            # server.port is the bound port
    ...
    await server.shutdown()         # every open session gets its tail and `end`, then 1001
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import json
import logging
import mimetypes
import secrets
import signal
import socket
from typing import Callable
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from samstream.model.errors import UserFacingError
from samstream.stream.batcher import Batcher, StreamHandle
from samstream.stream.processor import ChunkProcessor, Prompt
from samstream.stream.server.ops import (
    ServerConfig, ServerConfigError, ServerMetrics, origin_allowed, token_matches,
)
from samstream.stream.server.ws import PROTOCOL, Connection, MessageHandler, ProtocolError

log = logging.getLogger("samstream.server")


class SeparationServer:
    def __init__(self, processor: ChunkProcessor, config: ServerConfig, model_name: str, batcher: Batcher | None = None,
                 **batcher_options) -> None:
        """`batcher_options` go to the `Batcher` (e.g. realtime_budget_s); one batch holds every session.
        `batcher`: serve through this one instead, e.g. the Ray front's stand-in (stream/cluster/front.py)."""
        config.check()
        self.config = config
        self.model_name = model_name
        self.model_rate = processor.sample_rate
        if batcher is None:
            batcher_options.setdefault("max_batch", config.max_sessions)
            batcher = Batcher(processor, max_frame_s=config.max_frame_s, **batcher_options)
        self.batcher = batcher
        # More /health fields and /metrics text from whoever drives the server (the Ray front's per-replica figures).
        self.health_sources: list[Callable[[], dict]] = []
        self.metrics_sources: list[Callable[[], str]] = []
        self.metrics = ServerMetrics()
        self.sessions: dict[str, StreamHandle] = {}
        self.connections: set[Connection] = set()
        self.message_handlers: dict[str, MessageHandler] = {}
        self.port: int | None = None
        self._opening = 0  # sessions being opened (counted against the limit before they exist)
        self._server: Server | None = None
        self._lag_watch: asyncio.Future | None = None
        self._shutting_down = False

    def register_message_handler(self, message_type: str, handler: MessageHandler) -> None:
        """Serve another JSON message type on the same WebSocket: `await handler(connection, message)`.

        The handler replies with `await connection.send_message({...})` (replies stay in request order),
        refuses with `ProtocolError(code, message)`, and can hook the connection's end with
        `connection.add_cleanup(...)`. E.g. stream/server/webrtc.py: webrtc_offer, webrtc_candidate."""
        if message_type in ("start", "prompt", "flush", "stop", "metrics") or message_type in self.message_handlers:
            raise ValueError(f"message type {message_type!r} is already handled")
        self.message_handlers[message_type] = handler

    # ---------------------------------------------------------------- sessions

    async def open_stream(self, prompt: Prompt, client_rate: int, *, live: bool = True) -> tuple[str, StreamHandle]:
        """A new engine session, within the session limit; returns (session id, handle). `live=False`: paced
        "as fast as possible" (never degraded, flow-controlled; stream/batcher.py)."""
        if len(self.sessions) + self._opening >= self.config.max_sessions:
            raise ProtocolError("too_many_sessions", f"the server is at its limit of {self.config.max_sessions} "
                                                     "sessions: try again later")
        self._opening += 1
        try:
            handle = await self.batcher.open(prompt, client_rate, live=live)
        except UserFacingError as error:  # e.g. a text prompt for a model without a text encoder
            raise ProtocolError("bad_prompt", str(error)) from None
        except Exception as error:
            log.exception("opening a session failed")
            raise ProtocolError("model_error", f"the model could not open a session: {error}") from None
        finally:
            self._opening -= 1
        session_id = secrets.token_hex(6)
        self.sessions[session_id] = handle
        self.metrics.sessions_started += 1
        return session_id, handle

    def release(self, session_id: str) -> bool:
        """Forget a finished session (its figures join the totals); False if it was already released."""
        handle = self.sessions.pop(session_id, None)
        if handle is None:
            return False
        self.metrics.session_ended(handle.metrics)
        return True

    # ---------------------------------------------------------------- lifecycle

    async def start(self, sock: socket.socket | None = None) -> None:
        """Listen on `config.host:config.port`, or on `sock`, a socket `listen_socket` bound already (the CLI
        binds before it loads the model, so that a busy port is reported at once)."""
        if sock is None:
            sock = listen_socket(self.config.host, self.config.port)
        # No permessage-deflate: PCM hardly compresses, and deflating every frame was the server's largest cost
        # per frame (a third of the event loop's time with 16 clients).
        self._server = await serve(
            self._handle, sock=sock, process_request=self._process_request, create_connection=self._new_connection,
            max_size=self.config.max_message_bytes, server_header=f"samstream ({PROTOCOL})", compression=None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._lag_watch = asyncio.ensure_future(self._watch_loop_lag())
        log.info("listening", extra={"fields": {
            "url": self.url("ws"), "page": self.url("http") + "/", "host": self.config.host, "port": self.port,
            "model": self.model_name, "max_sessions": self.config.max_sessions,
            "auth": self.config.token is not None, "static": str(self.config.static_dir)}})

    async def _watch_loop_lag(self, every: float = 0.05) -> None:
        """How late the event loop runs a timer: the time it was busy (or starved of CPU) meanwhile."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + every
            await asyncio.sleep(every)
            self.metrics.timings["loop_lag"].observe(max(0.0, loop.time() - due))

    def url(self, scheme: str = "ws") -> str:
        """The server's address, e.g. ws://127.0.0.1:8765 or http://[::1]:8765 (bound already)."""
        return f"{scheme}://{url_host(self.config.host)}:{self.port}"

    async def shutdown(self) -> None:
        """Stop accepting connections, flush every session (tail + `end`) and close the connections (1001)."""
        if self._shutting_down:
            return
        self._shutting_down = True
        if self._lag_watch is not None:
            self._lag_watch.cancel()
        log.info("shutting down", extra={"fields": {"sessions": len(self.sessions)}})
        if self._server is not None:
            self._server.close(close_connections=False)
            for connection in list(self.connections):
                connection.request_shutdown()
            try:
                await asyncio.wait_for(self._server.wait_closed(), self.config.shutdown_grace_s)
            except TimeoutError:  # a client that does not read its tail must not hold the shutdown up
                log.warning("shutdown grace period over: dropping the remaining connections")
                for connection in list(self.connections):
                    connection.ws.transport.abort()
                await self._server.wait_closed()
        await self.batcher.aclose()
        log.info("stopped", extra={"fields": {"sessions_started": self.metrics.sessions_started}})

    async def run_until_signal(self, sock: socket.socket | None = None,
                               on_listening: Callable[[SeparationServer], None] | None = None) -> None:
        """Serve until SIGINT or SIGTERM, then shut down gracefully (`sock`: see `start`; `on_listening` is called
        once the server listens)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await self.start(sock)
            if on_listening is not None:
                on_listening(self)
            await stop.wait()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            await self.shutdown()

    async def _handle(self, websocket: ServerConnection) -> None:
        connection = Connection(self, websocket)
        if self._shutting_down:  # accepted just before the listener closed
            connection.request_shutdown()
        self.connections.add(connection)
        self.metrics.connections += 1
        log.info("connected", extra={"fields": {**connection.log_fields,
                                                "origin": websocket.request.headers.get("Origin")}})
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)
            self.metrics.connections -= 1
            log.info("disconnected", extra={"fields": connection.log_fields})

    def _new_connection(self, *args, **kwargs) -> ServerConnection:
        """websockets' connection (`serve`'s `create_connection` hook), and a log line when it closes without an
        HTTP request: websockets closes a connection whose bytes are not HTTP without a reply (a line that is too
        long gets 414, too many or too long headers 431)."""
        connection = ServerConnection(*args, **kwargs)

        def closed(_) -> None:
            if connection.request is None:
                log.info("closed without an HTTP request", extra={"fields": {
                    "remote": str(connection.remote_address[0]) if connection.remote_address else None}})

        asyncio.ensure_future(connection.wait_closed()).add_done_callback(closed)
        return connection

    # ---------------------------------------------------------------- HTTP

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse a WebSocket handshake (None lets it proceed), or answer a plain GET."""
        path = urlsplit(request.path).path
        headers = request.headers
        if "websocket" in headers.get("Upgrade", "").lower():
            if path != "/":
                return self._refusal(http.HTTPStatus.NOT_FOUND, "bad_message", "the WebSocket endpoint is /")
            if not token_matches(self.config, request.path, headers.get("Authorization")):
                return self._refusal(http.HTTPStatus.UNAUTHORIZED, "unauthorized",
                                     "missing or wrong token: send 'Authorization: Bearer T' or ?token=T")
            if not origin_allowed(self.config, headers.get("Origin"), headers.get("Host"), self.port):
                return self._refusal(http.HTTPStatus.FORBIDDEN, "origin_forbidden",
                                     f"origin {headers.get('Origin')} may not connect: start the server with "
                                     "--allowed-origin for it")
            return None
        if path == "/health":
            health = {"ok": not self._shutting_down, "model": self.model_name, "protocol": PROTOCOL,
                      "sessions": len(self.sessions), "max_sessions": self.config.max_sessions,
                      "connections": len(self.connections), "level": self.batcher.level}
            for source in self.health_sources:
                health.update(source())
            status = http.HTTPStatus.SERVICE_UNAVAILABLE if self._shutting_down else http.HTTPStatus.OK
            return http_response(status, json.dumps(health).encode(), "application/json")
        if path == "/metrics":
            if not token_matches(self.config, request.path, headers.get("Authorization")):
                return self._refusal(http.HTTPStatus.UNAUTHORIZED, "unauthorized",
                                     "missing or wrong token: send 'Authorization: Bearer T' or ?token=T",
                                     request="/metrics")
            text = self.metrics.render(self.model_name, [h.metrics for h in self.sessions.values()],
                                       self.batcher.level, self.config.max_sessions,
                                       getattr(self.batcher, "timings", None))
            text += "".join(source() for source in self.metrics_sources)
            return http_response(http.HTTPStatus.OK, text.encode(), "text/plain; version=0.0.4; charset=utf-8")
        return await self._static(path)

    def _refusal(self, status: http.HTTPStatus, code: str, message: str, request: str = "handshake") -> Response:
        """A refused request: a WebSocket handshake (`request` "handshake") or an HTTP GET (its path)."""
        self.metrics.errors[code] += 1
        log.info("refused", extra={"fields": {"code": code, "status": status.value, "request": request}})
        body = json.dumps({"type": "error", "code": code, "message": message, "request": request})
        return http_response(status, body.encode(), "application/json")

    async def _static(self, path: str) -> Response:
        root = self.config.static_dir
        if root is None:
            return http_response(http.HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
        root = root.resolve()
        relative = unquote(path).lstrip("/") or "index.html"
        file = (root / relative).resolve()
        if not file.is_relative_to(root) or not file.is_file():  # no escaping the folder with ../
            return http_response(http.HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
        body = await asyncio.to_thread(file.read_bytes)
        content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type == "application/javascript":
            content_type += "; charset=utf-8"
        return http_response(http.HTTPStatus.OK, body, content_type)


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port and listening, or a clear error (port in use, unknown address)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ServerConfigError(f"cannot listen on {host}:{port}: unknown address ({error.strerror}); "
                                "pass --host with an address of this machine") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        sock.close()
        hint = "choose another --port (or stop the server that holds it)" if error.errno == 98 else \
            "choose another --port or --host"
        raise ServerConfigError(f"cannot listen on {host}:{port} ({error.strerror}): {hint}") from None
    sock.setblocking(False)
    return sock


def url_host(host: str) -> str:
    """A host as it goes into a URL: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def http_response(status: http.HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers([
        ("Date", email.utils.formatdate(usegmt=True)),
        ("Connection", "close"),
        ("Content-Length", str(len(body))),
        ("Content-Type", content_type),
        ("Cache-Control", "no-cache"),
    ])
    return Response(status.value, status.phrase, headers, body)
