"""`samstream stream FILE` through a real server on a machine loaded by CPU hogs equals `samstream separate
FILE` (>= 60 dB at 16 and 48 kHz, 0 s degraded, whatever the send pace: the stream is paced
as_fast_as_possible), while a live client that falls behind is degraded, says so, and fails with --strict.

References are computed here from the model itself: nothing about the model's latency or outputs is assumed."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from contextlib import contextmanager

import numpy as np
import pytest
import soundfile
from fixtures.signals import tonal_mixture
from test_stream_offline import PROMPTS, default_model, one_torch_thread_module  # noqa: F401 (fixtures)
from test_ws_protocol import url

from samstream.clients import cli
from samstream.stream.regimes.block_causal import BlockCausalProcessor
from samstream.stream.server.app import SeparationServer
from samstream.stream.server.ops import ServerConfig


def snr_db(estimate: np.ndarray, reference: np.ndarray) -> float:
    error = np.sum((estimate.astype(np.float64) - reference) ** 2)
    return float("inf") if error == 0 else float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / error))


@contextmanager
def cpu_hog(processes: int = 2):
    """Busy loops on every core, started and stopped here."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


@pytest.mark.parametrize("rate", [16000, 48000])
async def test_streaming_a_file_on_a_loaded_machine_equals_separate(default_model, tmp_path, capsys, rate):
    x = tonal_mixture(3.0, rate, seed=5)
    source = tmp_path / "mix.wav"
    soundfile.write(source, x, rate, subtype="FLOAT")
    prompt = PROMPTS[1]
    # The server degrades live streams as it normally does (its default real-time budget).
    server = SeparationServer(BlockCausalProcessor(default_model), ServerConfig(port=0), model_name="tiny")
    await server.start()
    runs = {}
    try:
        with cpu_hog():
            for name, extra in (("fast", []), ("realtime", ["--realtime"])):
                code = await asyncio.to_thread(cli.main, [
                    "stream", str(source), "--prompt", prompt, "-o", str(tmp_path / name), "--server", url(server),
                    "--json", *extra])
                captured = capsys.readouterr()
                assert code == 0, captured.err
                runs[name] = json.loads(captured.out.strip().splitlines()[-1])
                assert "warning" not in captured.err
    finally:
        await server.shutdown()
    assert await asyncio.to_thread(cli.main, ["separate", str(source), "--prompt", prompt, "-o",
                                              str(tmp_path / "offline")]) == 0
    for name, summary in runs.items():
        assert summary["pacing"] == "as_fast_as_possible"
        assert summary["degraded_s"] == {"fewer_steps": 0.0, "pass_through": 0.0}
        for part in ("target", "residual"):
            streamed, _ = soundfile.read(tmp_path / name / f"{part}.wav", dtype="float32")
            offline, _ = soundfile.read(tmp_path / "offline" / f"{part}.wav", dtype="float32")
            assert snr_db(streamed, offline) >= 60, (name, part)


class SlowProcessor:
    """A model that needs more than real time: 40 ms of compute per 10 ms hop."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def process(self, states, hops, steps):
        time.sleep(0.04)
        return self.inner.process(states, hops, steps)


async def test_a_live_stream_that_falls_behind_is_degraded_loudly(processor, tmp_path, capsys):
    x = tonal_mixture(3.0, 16000, seed=6)
    source = tmp_path / "mix.wav"
    soundfile.write(source, x, 16000, subtype="FLOAT")
    server = SeparationServer(SlowProcessor(processor), ServerConfig(port=0), model_name="slow")
    await server.start()
    try:
        strict = await asyncio.to_thread(cli.main, [
            "stream", str(source), "--span", "+:0.1-0.4", "-o", str(tmp_path / "live"), "--server", url(server),
            "--live", "--realtime", "--strict", "--json"])
        captured = capsys.readouterr()
    finally:
        await server.shutdown()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["pacing"] == "live" and summary["degraded_s"]["pass_through"] > 0.5
    assert strict == 3  # --strict: degraded output is an error (the files are written all the same)
    warning = next(line for line in captured.err.splitlines() if "warning" in line)
    seconds = f"{sum(summary['degraded_s'].values()):.2f} s of the 3.00 s were degraded"
    assert seconds in warning and "pass through" in warning
    target, _ = soundfile.read(tmp_path / "live" / "target.wav", dtype="float32")
    assert target.shape == x.shape


