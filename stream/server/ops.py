"""Operating the server: its limits and access rules, /health and /metrics, structured JSON logs.

Access rules. A server on a loopback address serves only this machine; binding any other address
requires a token, which clients send as `Authorization: Bearer T` (or `?token=T` where a client
cannot set headers, i.e. browsers). Browsers also send an `Origin` header with every WebSocket
handshake, and any web page the user visits could open a socket to a local server, so a handshake
whose Origin is neither this server's own (its page, served from `--static`) nor an allowed one is
refused. Programs that send no Origin (the Python client) are not browsers and pass that check.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from samstream.model.errors import UserFacingError
from samstream.stream.metrics import FEWER_STEPS, PASS_THROUGH, Histogram, SessionMetrics

LEVEL_NAMES = {FEWER_STEPS: "fewer_steps", PASS_THROUGH: "pass_through"}


class ServerConfigError(UserFacingError):
    """The server cannot start with these settings (unsafe bind address, missing static folder, ...)."""


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765  # 0: any free port (tests, benchmarks); the bound port is logged
    token: str | None = None
    max_sessions: int = 16
    allowed_origins: tuple[str, ...] = ()  # besides the server's own origin
    static_dir: Path | None = None  # the browser client; None: no static files
    max_message_bytes: int = 2**21  # any WebSocket message; bigger ones close the connection (1009)
    max_frame_s: float = 1.0  # audio per binary frame; longer frames are refused (frame_too_large)
    idle_timeout_s: float = 30.0  # no message from the client for this long ends the connection
    send_timeout_s: float = 10.0  # a reply that cannot be written for this long: the client is cut off
    shutdown_grace_s: float = 10.0  # how long a graceful shutdown waits for sessions to flush

    def check(self) -> None:
        if self.token is None and not is_loopback(self.host):
            raise ServerConfigError(
                f"binding {self.host} exposes the server to the network: pass --token T (or set SAMSTREAM_TOKEN); "
                "clients then send 'Authorization: Bearer T' (browsers: ?token=T)"
            )
        if self.token is not None and not self.token:
            raise ServerConfigError("the token is empty: pass a non-empty --token")
        if self.max_sessions < 1:
            raise ServerConfigError(f"--max-sessions must be at least 1, got {self.max_sessions}")
        if not 0 < self.max_frame_s <= 10:
            raise ServerConfigError(f"the frame limit must lie in (0, 10] seconds, got {self.max_frame_s}")
        if self.idle_timeout_s <= 0:
            raise ServerConfigError(f"--idle-timeout must be positive, got {self.idle_timeout_s}")
        if self.send_timeout_s <= 0:
            raise ServerConfigError(f"--send-timeout must be positive, got {self.send_timeout_s}")
        if self.static_dir is not None and not self.static_dir.is_dir():
            raise ServerConfigError(f"static folder {self.static_dir} does not exist")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def request_token(path: str, authorization: str | None) -> str | None:
    """The token a request carries: `Authorization: Bearer T`, else the `token` query parameter."""
    if authorization is not None and authorization.startswith("Bearer "):
        return authorization[len("Bearer ") :]
    values = parse_qs(urlsplit(path).query).get("token")
    return values[0] if values else None


def token_matches(config: ServerConfig, path: str, authorization: str | None) -> bool:
    if config.token is None:
        return True
    given = request_token(path, authorization)
    return given is not None and hmac.compare_digest(given.encode(), config.token.encode())


def origin_allowed(config: ServerConfig, origin: str | None, host_header: str | None,
                   port: int | None = None) -> bool:
    """Whether a browser page from `origin` may open a socket: the server's own page, or an allowed origin.

    The server's own page is the one served at the address the socket was opened on (`Host`), or at any
    loopback name of this machine on the server's port (`port`): a page opened as http://localhost:PORT/ that
    connects to ws://127.0.0.1:PORT/ (or the reverse) comes from this very server."""
    if origin is None:  # not a browser
        return True
    if origin in config.allowed_origins:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https"):
        return False
    if host_header is not None and parts.netloc == host_header:
        return True
    try:
        origin_port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # an unreadable port
        return False
    return port is not None and origin_port == port and parts.hostname is not None and is_loopback(parts.hostname)


# ------------------------------------------------------------------------------------------- metrics

# Seconds from a frame's arrival to its output leaving (compute + queueing, the server's share of latency).
RESPONSE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, math.inf)


@dataclass
class ServerMetrics:
    """Server-wide counters; the figures of open sessions are added when /metrics is rendered."""

    started_at: float = field(default_factory=time.monotonic)
    connections: int = 0  # open WebSocket connections
    sessions_started: int = 0
    errors: Counter = field(default_factory=Counter)  # error code -> count
    # Totals of finished sessions.
    audio_in_s: float = 0.0
    audio_out_s: float = 0.0
    compute_s: float = 0.0
    degraded_s: dict[int, float] = field(default_factory=lambda: {FEWER_STEPS: 0.0, PASS_THROUGH: 0.0})
    response_counts: list[int] = field(default_factory=lambda: [0] * len(RESPONSE_BUCKETS))
    response_sum_s: float = 0.0
    # The transport's share of a frame's time: its output waiting to be sent (reply order, the socket), and the
    # event loop's lag (a timer's overshoot). The engine's share is the batcher's `timings`.
    timings: dict[str, Histogram] = field(default_factory=lambda: {"send_wait": Histogram(), "loop_lag": Histogram()})

    def session_ended(self, metrics: SessionMetrics) -> None:
        self.audio_in_s += metrics.audio_in_s
        self.audio_out_s += metrics.audio_out_s
        self.compute_s += metrics.compute_s
        for level, seconds in metrics.degraded_s.items():
            self.degraded_s[level] += seconds

    def frame_answered(self, seconds: float) -> None:
        for index, bound in enumerate(RESPONSE_BUCKETS):
            if seconds <= bound:
                self.response_counts[index] += 1
                break
        self.response_sum_s += seconds

    def render(self, model: str, open_sessions: list[SessionMetrics], level: int, max_sessions: int,
               engine_timings: dict[str, Histogram] | None = None) -> str:
        """Prometheus text exposition format (version 0.0.4)."""
        audio_in = self.audio_in_s + sum(m.audio_in_s for m in open_sessions)
        audio_out = self.audio_out_s + sum(m.audio_out_s for m in open_sessions)
        compute = self.compute_s + sum(m.compute_s for m in open_sessions)
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP samstream_{name} {help_text}")
            lines.append(f"# TYPE samstream_{name} {kind}")
            lines.extend(f"samstream_{name}{labels} {format_value(value)}" for labels, value in samples)

        metric("info", "gauge", "The model this server runs.", [(f'{{model="{escape_label(model)}"}}', 1)])
        metric("uptime_seconds", "gauge", "Seconds since the server started.",
               [("", time.monotonic() - self.started_at)])
        metric("connections", "gauge", "Open WebSocket connections.", [("", self.connections)])
        metric("sessions", "gauge", "Open streaming sessions.", [("", len(open_sessions))])
        metric("sessions_max", "gauge", "Session limit (--max-sessions).", [("", max_sessions)])
        metric("sessions_started_total", "counter", "Sessions started.", [("", self.sessions_started)])
        metric("audio_seconds_total", "counter", "Client audio received (in) and returned (out).",
               [('{direction="in"}', audio_in), ('{direction="out"}', audio_out)])
        metric("compute_seconds_total", "counter", "Model compute spent on sessions.", [("", compute)])
        metric("rtf", "gauge", "Real-time factor over all audio so far: compute seconds per audio second.",
               [("", compute / audio_in if audio_in else 0.0)])
        metric("latency_seconds", "gauge", "Largest fixed algorithmic latency among open sessions.",
               [("", max((m.latency_ms for m in open_sessions), default=0.0) / 1000.0)])
        metric("queue_hops", "gauge", "Hops waiting for compute, all sessions.",
               [("", sum(m.queue_depth for m in open_sessions))])
        metric("degradation_level", "gauge", "0 full quality, 1 fewer sampling steps, 2 pass-through.",
               [("", level)])
        degraded = {lvl: self.degraded_s[lvl] + sum(m.degraded_s[lvl] for m in open_sessions) for lvl in LEVEL_NAMES}
        metric("degraded_seconds_total", "counter", "Audio produced at a degraded level.",
               [(f'{{level="{LEVEL_NAMES[lvl]}"}}', seconds) for lvl, seconds in degraded.items()])
        metric("errors_total", "counter", "Errors sent to clients (and refused handshakes), by code.",
               [(f'{{code="{code}"}}', count) for code, count in sorted(self.errors.items())])
        cumulative, buckets = 0, []
        for bound, count in zip(RESPONSE_BUCKETS, self.response_counts):
            cumulative += count
            buckets.append((f'_bucket{{le="{"+Inf" if bound == math.inf else bound}"}}', cumulative))
        lines.append("# HELP samstream_frame_response_seconds From a frame's arrival to its output being sent.")
        lines.append("# TYPE samstream_frame_response_seconds histogram")
        lines.extend(f"samstream_frame_response_seconds{suffix} {value}" for suffix, value in buckets)
        lines.append(f"samstream_frame_response_seconds_sum {format_value(self.response_sum_s)}")
        lines.append(f"samstream_frame_response_seconds_count {cumulative}")
        for name, histogram in {**(engine_timings or {}), **self.timings}.items():
            lines.append(f"# HELP samstream_{name}_seconds {TIMING_HELP.get(name, name)}")
            lines.append(f"# TYPE samstream_{name}_seconds histogram")
            cumulative = 0
            for bound, count in zip(histogram.buckets, histogram.counts):
                cumulative += count
                lines.append(f'samstream_{name}_seconds_bucket{{le="{"+Inf" if bound == math.inf else bound}"}} '
                             f"{cumulative}")
            lines.append(f"samstream_{name}_seconds_sum {format_value(histogram.sum)}")
            lines.append(f"samstream_{name}_seconds_count {cumulative}")
        return "\n".join(lines) + "\n"


TIMING_HELP = {
    "hop_wait": "From a hop's audio being complete to the round that takes it starting (queueing, batch formation).",
    "round": "One batched processor call (compute of a round).",
    "handoff": "From the worker reporting output to the event loop handing it out (thread hand-off).",
    "send_wait": "From a frame's output being ready to it being written to the socket (reply order, sending).",
    "loop_lag": "How late the event loop ran a 50 ms timer (time the loop was busy or starved).",
}


def format_value(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# ------------------------------------------------------------------------------------------- logs


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event, and the record's `fields` (session ids, codes, ...)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on stderr for the whole process (websockets' handshake logs included), unless logging
    was configured already (e.g. by a test runner)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter())
    logging.basicConfig(level=level, handlers=[handler])
