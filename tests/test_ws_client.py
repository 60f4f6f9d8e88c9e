"""The Python client and the command built on it: `samstream stream` (file through a server, outputs aligned
with the input). `samstream bench e2e`, which uses it too, is tested in test_bench_e2e.py."""

from __future__ import annotations

import asyncio
import json
import socket

import numpy as np
import pytest
import soundfile
from test_ws_protocol import (
    SPANS, error_of, in_process, mixture, running_server, url,
)

from samstream.clients.ws_client import SeparationClient
from samstream.clients import cli
from samstream.stream.processor import Prompt


async def test_stream_command_writes_outputs_aligned_with_the_input(processor, tmp_path, capsys):
    rate = 16000
    x = mixture(1.0, rate, seed=7)
    soundfile.write(tmp_path / "in.wav", x, rate, subtype="FLOAT")
    frames = [x[i : i + 320] for i in range(0, len(x), 320)]  # the command's 20 ms frames
    expected = in_process(processor, rate, Prompt(spans=SPANS), frames)
    async with running_server(processor) as server:
        code = await asyncio.to_thread(cli.main, ["stream", str(tmp_path / "in.wav"), "--span", "+:0.1-0.4",
                                                  "-o", str(tmp_path / "out"), "--server", url(server), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    latency = summary["latency_samples"]
    assert summary["samples"] == len(x) and summary["sample_rate"] == rate
    for index, name in enumerate(("target", "residual")):
        audio, file_rate = soundfile.read(tmp_path / "out" / f"{name}.wav", dtype="float32")
        assert file_rate == rate and audio.shape == (len(x),)
        np.testing.assert_array_equal(audio, expected[index, latency : latency + len(x)])


async def test_stream_command_realtime_pcm16_other_rate(processor, tmp_path, capsys):
    rate = 8000
    x = mixture(0.5, rate, seed=8)
    soundfile.write(tmp_path / "in.wav", x, rate, subtype="FLOAT")
    wire = np.round(x * 32768).clip(-32768, 32767).astype(np.float32) / 32768
    expected = in_process(processor, rate, Prompt(spans=SPANS), [wire[i : i + 80] for i in range(0, len(x), 80)])
    async with running_server(processor) as server:
        code = await asyncio.to_thread(cli.main, [
            "stream", str(tmp_path / "in.wav"), "--span", "+:0.1-0.4", "-o", str(tmp_path), "--server", url(server),
            "--realtime", "--format", "pcm16", "--frame-ms", "10", "--json"])
    assert code == 0
    latency = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["latency_samples"]
    target, _ = soundfile.read(tmp_path / "target.wav", dtype="float32")
    assert target.shape == (len(x),)
    np.testing.assert_allclose(target, expected[0, latency : latency + len(x)], atol=1 / 32768)


def test_stream_command_without_a_server(tmp_path, capsys):
    soundfile.write(tmp_path / "in.wav", mixture(0.1, 16000), 16000)
    with socket.socket() as probe:  # a loopback port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert cli.main(["stream", str(tmp_path / "in.wav"), "--span", "+:0-0.1", "-o", str(tmp_path),
                     "--server", f"ws://127.0.0.1:{port}"]) == 2
    assert "cannot reach the server" in capsys.readouterr().err
    assert cli.main(["stream", str(tmp_path / "in.wav"), "-o", str(tmp_path)]) == 2
    assert "give a prompt" in capsys.readouterr().err


async def test_client_session_lifecycle(processor):
    rate = 16000
    x = mixture(0.4, rate)
    async with running_server(processor) as server:
        assert await error_of(SeparationClient.connect(url(server) + "/elsewhere")) == "bad_message"
        client = await SeparationClient.connect(url(server))
        started = await client.start(rate, spans=SPANS, outputs="target")
        for i in range(0, len(x), 1600):
            await client.send_audio(x[i : i + 1600])
        await client.set_prompt(spans=[("-", 0.1, 0.2)])
        metrics = await client.metrics()  # replies come in order: every frame was answered before it
        assert client.in_flight == 0 and metrics["samples_in"] == len(x)
        outputs = [await client.receive_audio() for _ in range(4)]
        assert all(o.residual is None and len(o.target) == 1600 for o in outputs)
        end = await client.stop()
        assert len(await client.receive_audio()) == started["latency_samples"]
        assert await client.receive_audio() is None
        assert end["reason"] == "stop" and end["samples_in"] == len(x)
        await asyncio.wait_for(client.ws.wait_closed(), 10)
        assert client.ws.close_code == 1000
        with pytest.raises(ConnectionError, match="closed"):
            await client.metrics()
        await client.close()
