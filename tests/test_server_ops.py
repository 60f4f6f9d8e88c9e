"""Server operations: /health, /metrics (Prometheus), token and origin checks, bind safety, static files,
JSON logs with session ids, a clear error when the model cannot load, and SIGTERM flushing open sessions."""

from __future__ import annotations

import asyncio
import json
import logging
import signal

import pytest
from test_ws_protocol import SPANS, error_of, mixture, running_server, url

from samstream.clients.ws_client import SeparationClient
from samstream.clients import cli
from samstream.clients.cli.bench_e2e import start_server
from samstream.stream.server.ops import JsonLogFormatter, ServerConfig, ServerConfigError


async def http_get(port: int, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """A plain HTTP/1.1 GET on loopback (the server closes the connection after answering)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    parsed = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in parsed.items()}, body


def prometheus(text: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


async def test_health_and_prometheus_metrics(processor):
    async with running_server(processor, max_sessions=4) as server:
        status, headers, body = await http_get(server.port, "/health")
        assert status == 200 and headers["content-type"] == "application/json"
        assert json.loads(body) == {**json.loads(body), "ok": True, "model": "random", "sessions": 0,
                                    "max_sessions": 4, "protocol": "samstream.v1"}
        async with await SeparationClient.connect(url(server)) as client:
            await client.start(16000, spans=SPANS)
            x = mixture(0.3, 16000)
            for i in range(0, len(x), 1600):
                await client.send_audio(x[i : i + 1600])
                await client.receive_audio()
            await client.send_audio(b"\x00")
            assert await error_of(client.receive_audio()) == "bad_frame"
            assert json.loads((await http_get(server.port, "/health"))[2])["sessions"] == 1
            status, headers, body = await http_get(server.port, "/metrics")
            assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
            live = prometheus(body.decode())
            await client.flush()
        after = prometheus((await http_get(server.port, "/metrics"))[2].decode())
    assert live["samstream_sessions"] == 1 and live["samstream_connections"] == 1
    assert live['samstream_info{model="random"}'] == 1 and live["samstream_sessions_max"] == 4
    assert live['samstream_errors_total{code="bad_frame"}'] == 1
    assert live['samstream_audio_seconds_total{direction="in"}'] == pytest.approx(0.3)
    assert live["samstream_rtf"] > 0 and live["samstream_compute_seconds_total"] > 0
    assert live["samstream_latency_seconds"] > 0
    assert live['samstream_degraded_seconds_total{level="fewer_steps"}'] == 0
    assert live['samstream_degraded_seconds_total{level="pass_through"}'] == 0
    assert live["samstream_frame_response_seconds_count"] == 3
    assert live['samstream_frame_response_seconds_bucket{le="+Inf"}'] == 3
    # Finished sessions keep counting in the totals.
    assert after["samstream_sessions"] == 0 and after["samstream_sessions_started_total"] == 1
    assert after['samstream_audio_seconds_total{direction="in"}'] == pytest.approx(0.3)


async def test_token_guards_websocket_and_metrics(processor):
    async with running_server(processor, token="s3cret") as server:
        assert await error_of(SeparationClient.connect(url(server))) == "unauthorized"
        assert await error_of(SeparationClient.connect(url(server), token="wrong")) == "unauthorized"
        for client in (await SeparationClient.connect(url(server), token="s3cret"),
                       await SeparationClient.connect(url(server) + "/?token=s3cret")):
            async with client:
                await client.start(16000, spans=SPANS)
                await client.flush()
        status, _, body = await http_get(server.port, "/metrics")
        assert status == 401 and json.loads(body)["code"] == "unauthorized"
        assert json.loads(body)["request"] == "/metrics"  # an HTTP GET, not a handshake
        assert (await http_get(server.port, "/metrics", {"Authorization": "Bearer s3cret"}))[0] == 200
        assert (await http_get(server.port, "/health"))[0] == 200  # liveness probes need no token
        assert server.metrics.errors["unauthorized"] == 3


async def test_origin_check(processor):
    async with running_server(processor, allowed_origins=("https://app.example.org",)) as server:
        assert await error_of(SeparationClient.connect(url(server), origin="http://evil.example")) == "origin_forbidden"
        # another loopback server's page, or this server's name on another port, is not this server's page
        for origin in (f"http://localhost:{server.port + 1}", "http://localhost", f"file://localhost:{server.port}"):
            assert await error_of(SeparationClient.connect(url(server), origin=origin)) == "origin_forbidden"
        # the server's own page (under any loopback name: it serves it there), an allowed origin, not a browser
        for origin in (f"http://127.0.0.1:{server.port}", f"http://localhost:{server.port}",
                       f"http://[::1]:{server.port}", "https://app.example.org", None):
            async with await SeparationClient.connect(url(server), origin=origin) as client:
                assert (await client.start(16000, spans=SPANS))["type"] == "started"


async def test_bytes_that_are_not_http_close_the_connection(processor, caplog):
    async def answer_to(junk: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(junk)
        try:
            return await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()

    with caplog.at_level(logging.INFO, logger="samstream.server"):
        async with running_server(processor) as server:
            # websockets' own behaviour: no reply, the connection is closed; the server logs it
            for junk in (b"HELLO\r\n\r\n", b"\x16\x03\x01\x00\xa5\x01\x00\x00\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n"):
                assert await answer_to(junk) == b""
            assert (await answer_to(b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 414 ")
            assert (await http_get(server.port, "/health"))[0] == 200  # and the server serves on
            for _ in range(100):  # the log line comes once the server saw the connection close
                if len([r for r in caplog.records if r.getMessage() == "closed without an HTTP request"]) >= 4:
                    break
                await asyncio.sleep(0.05)
    refused = [r for r in caplog.records if r.getMessage() == "closed without an HTTP request"]
    assert len(refused) == 4 and all(r.fields["remote"] == "127.0.0.1" for r in refused)


async def test_listening_addresses_and_the_page_address(processor, caplog):
    from samstream.clients.cli.serve import listening_note
    from samstream.stream.server.app import url_host

    assert url_host("::1") == "[::1]" and url_host("127.0.0.1") == "127.0.0.1" and url_host("[::1]") == "[::1]"
    with caplog.at_level(logging.INFO, logger="samstream.server"):
        async with running_server(processor) as server:
            note = listening_note(server)
    (listening,) = [r for r in caplog.records if r.getMessage() == "listening"]
    assert listening.fields["url"] == f"ws://127.0.0.1:{server.port}"
    assert listening.fields["page"] == f"http://127.0.0.1:{server.port}/"
    assert f"open http://127.0.0.1:{server.port}/ in a browser" in note


def test_binding_beyond_loopback_needs_a_token(capsys):
    with pytest.raises(ServerConfigError, match="--token"):
        ServerConfig(host="0.0.0.0").check()
    ServerConfig(host="0.0.0.0", token="t").check()
    for host in ("127.0.0.1", "::1", "localhost"):
        ServerConfig(host=host).check()
    assert cli.main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "exposes the server to the network" in capsys.readouterr().err


async def test_port_in_use_is_a_clear_error(processor, capsys, monkeypatch):
    from samstream.clients.cli import serve
    from samstream.stream.server.app import SeparationServer

    async with running_server(processor) as server:
        second = SeparationServer(processor, ServerConfig(port=server.port), model_name="random")
        with pytest.raises(ServerConfigError, match="cannot listen"):
            await second.start()
        await second.shutdown()
        # `serve` says so before it loads any model
        monkeypatch.setattr(serve, "load_processor", lambda *a, **k: pytest.fail("the model was loaded"))
        assert await asyncio.to_thread(cli.main, ["serve", "--port", str(server.port)]) == 2
        assert "stop the server that holds it" in capsys.readouterr().err


def test_serve_says_when_the_model_cannot_load(capsys, monkeypatch, tmp_path):
    import samstream.model.embedded

    monkeypatch.setattr(samstream.model.embedded, "WEIGHTS_DIR", tmp_path)  # no trained tiny model here
    assert cli.main(["serve", "--port", "0"]) == 2
    assert "the default model 'tiny' cannot load" in capsys.readouterr().err
    assert cli.main(["serve", "--model", str(tmp_path / "missing"), "--port", "0"]) == 2
    assert "does not exist" in capsys.readouterr().err


async def test_static_files(processor, tmp_path):
    web = tmp_path / "web"
    web.mkdir()
    (web / "index.html").write_text("<h1>samstream</h1>")
    (web / "app.js").write_text("console.log(1)")
    (tmp_path / "secret.txt").write_text("no")
    async with running_server(processor, static_dir=web) as server:
        status, headers, body = await http_get(server.port, "/")
        assert (status, body) == (200, b"<h1>samstream</h1>") and headers["content-type"] == "text/html; charset=utf-8"
        status, headers, _ = await http_get(server.port, "/app.js")
        assert status == 200 and "javascript" in headers["content-type"]
        for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/missing.css"):
            assert (await http_get(server.port, path))[0] == 404
    with pytest.raises(ServerConfigError, match="does not exist"):
        ServerConfig(static_dir=tmp_path / "nowhere").check()


async def test_json_logs_carry_session_ids(processor, caplog):
    caplog.set_level(logging.INFO, logger="samstream.server")
    async with running_server(processor) as server:
        async with await SeparationClient.connect(url(server)) as client:
            started = await client.start(16000, spans=SPANS)
            await client.send_audio(b"\x00")
            await error_of(client.receive_audio())
            await client.flush()
    lines = [json.loads(JsonLogFormatter().format(record)) for record in caplog.records]
    events = {line["event"]: line for line in lines if line.get("session") == started["session"]}
    assert {"session started", "error", "session ended"} <= set(events)
    assert events["error"]["code"] == "bad_frame" and events["session ended"]["reason"] == "flush"
    assert all({"ts", "level", "logger", "event"} <= set(line) for line in lines)


async def test_sigterm_flushes_open_sessions_then_exits():
    process, server_url, log_path = start_server("random", threads=1, max_sessions=4)
    try:
        async with await SeparationClient.connect(server_url) as client:
            started = await client.start(16000, spans=SPANS, format="float32")
            x = mixture(0.5, 16000)
            for i in range(0, len(x), 800):
                await client.send_audio(x[i : i + 800])
            received = [len(await client.receive_audio()) for _ in range(0, len(x), 800)]
            process.send_signal(signal.SIGTERM)
            tail = await client.receive_audio()
            assert await client.receive_audio() is None
            await asyncio.wait_for(client.ws.wait_closed(), 30)
        assert sum(received) == len(x) and len(tail) == started["latency_samples"]
        assert client.end["reason"] == "shutdown" and client.end["samples_in"] == len(x)
        assert await asyncio.to_thread(process.wait, 60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    events = [json.loads(line)["event"] for line in open(log_path) if line.startswith("{")]
    assert events.index("shutting down") < events.index("stopped")
    assert client.ws.close_code == 1001
