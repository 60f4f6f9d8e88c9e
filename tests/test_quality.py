"""Live quality scores (stream/quality.py): the Judge gets exactly the last window of (mixture, target) as the
listener hears it, off the audio path, at the declared interval; a slow Judge skips turns, never blocks."""

import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from samstream.model.judge import JudgeScores
from samstream.stream.metrics import SessionMetrics
from samstream.stream.processor import Prompt
from samstream.stream.quality import QualityConfig, QualityMonitor
from samstream.stream.session import StreamSession

RATE = 16000


@dataclass
class HalfState:
    prompt: Prompt
    line: np.ndarray  # the delay line


class HalfProcessor:
    """Target = residual = half the mixture, `delay` samples late."""

    sample_rate, hop_samples, max_steps = RATE, 1600, 1

    def __init__(self, delay: int = 800):
        self.delay_samples = delay

    def init_state(self, prompt):
        return HalfState(prompt, np.zeros(self.delay_samples, np.float32))

    def set_prompt(self, state, prompt):
        state.prompt = prompt

    def process(self, states, hops, steps):
        out = np.empty((len(states), 2, self.hop_samples), np.float32)
        for i, (state, hop) in enumerate(zip(states, hops)):
            line = np.concatenate([state.line, hop])
            out[i] = 0.5 * line[:self.hop_samples]
            state.line = line[self.hop_samples:]
        return out

    def flush_hops(self):
        return 1


class FakeJudge:
    sample_rate = RATE

    def __init__(self, seconds: float = 0.0):
        self.calls = []
        self.seconds = seconds
        self.release = threading.Event()

    def score(self, mixtures, candidates, prompts):
        self.calls.append((mixtures[0].numpy().copy(), candidates[0].numpy().copy(), prompts[0]))
        if self.seconds:
            self.release.wait(self.seconds)
        return [JudgeScores(3.0, 3.5, 2.5, 4.0)]


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_judge_sees_the_last_window_as_heard_and_scores_land_in_metrics():
    judge = FakeJudge()
    monitor = QualityMonitor(judge, RATE, QualityConfig(interval_s=1.0, window_s=0.5))
    processor = HalfProcessor()
    session = StreamSession(processor, RATE, Prompt(text="dog barking"), quality_monitor=monitor)
    audio = np.random.default_rng(0).standard_normal(4 * RATE).astype(np.float32) * 0.1
    for start in range(0, len(audio), RATE // 10):  # as a client would, in 100 ms frames
        session.push(audio[start:start + RATE // 10])
        wait_for(lambda: not session.quality._busy)
    monitor.close()
    assert len(judge.calls) == 4  # every 1 s of stream once 0.5 s of real output exists
    for mixture, candidate, text in judge.calls:
        assert text == "dog barking" and len(mixture) == RATE // 2
    # Aligned as heard: the window ends where the session's output ended when it was taken (output n is the
    # separation of input n - L), and the target is that output.
    window_end = round(session.metrics.quality["window_end_s"] * RATE)
    mixture, candidate, _ = judge.calls[-1]
    np.testing.assert_array_equal(mixture, audio[window_end - RATE // 2:window_end])
    np.testing.assert_allclose(candidate, 0.5 * mixture, atol=1e-7)
    assert session.metrics.quality["overall"] == 3.0 and session.metrics.quality["prompt"] == "dog barking"
    assert session.metrics.as_dict()["quality"]["faithfulness"] == 4.0


def test_a_slow_judge_skips_turns_and_never_blocks_the_audio():
    judge = FakeJudge(seconds=30.0)
    monitor = QualityMonitor(judge, RATE, QualityConfig(interval_s=0.2, window_s=0.2))
    session = StreamSession(HalfProcessor(delay=0), RATE, Prompt(text="music"), quality_monitor=monitor)
    started = time.perf_counter()
    session.push(np.zeros(3 * RATE, np.float32))
    assert time.perf_counter() - started < 5.0  # the 30 s Judge call runs beside the stream
    wait_for(lambda: len(judge.calls) == 1)  # the one job in flight; every later turn was skipped
    assert session.quality.skipped >= 10
    judge.release.set()
    wait_for(lambda: session.metrics.quality is not None)
    assert session.metrics.quality["skipped"] >= 10
    monitor.close()


def test_prompt_without_text_and_prompt_changes():
    judge = FakeJudge()
    monitor = QualityMonitor(judge, RATE, QualityConfig(interval_s=0.5, window_s=0.5))
    session = StreamSession(HalfProcessor(delay=0), RATE, Prompt(spans=(("+", 0.0, 1.0),)), quality_monitor=monitor)
    session.push(np.zeros(2 * RATE, np.float32))
    monitor.close()
    assert judge.calls == [] and session.metrics.quality is None  # the Judge needs text to score against
    monitor = QualityMonitor(judge, RATE, QualityConfig(interval_s=0.5, window_s=0.5))
    session = StreamSession(HalfProcessor(delay=0), RATE, Prompt(text="a"), quality_monitor=monitor)
    for _ in range(10):
        session.push(np.zeros(RATE // 10, np.float32))
        wait_for(lambda: not session.quality._busy)
    session.set_prompt(Prompt(text="b"))
    session.push(np.zeros(RATE // 2 - 1600, np.float32))  # less than a fresh window since the change
    monitor.close()
    assert [text for *_, text in judge.calls] == ["a", "a"]


def test_real_judge_through_the_monitor_equals_a_direct_call(tmp_path):
    """The extras' small Judge (200 Hz) fed hop by hop: the stored scores are the Judge's own on that window."""
    from fixtures.side_models import side_model_directory
    from samstream.model.components import load_judge

    judge = load_judge(side_model_directory("judge", tmp_path))[0]
    monitor = QualityMonitor(judge, 200, QualityConfig(interval_s=1.0, window_s=1.0))
    metrics = SessionMetrics(latency_ms=0.0)
    tap = monitor.tap(metrics, Prompt(text="dog barking"))
    rng = np.random.default_rng(1)
    mixture = rng.standard_normal(400).astype(np.float32)
    target = (0.5 * mixture + 0.1 * rng.standard_normal(400)).astype(np.float32)
    for start in range(0, 200, 40):
        tap.observe(mixture[start:start + 40], target[start:start + 40])
    monitor.close()
    expected = judge.score([torch.from_numpy(mixture[:200])], [torch.from_numpy(target[:200])], ["dog barking"])[0]
    assert metrics.quality["overall"] == pytest.approx(expected.overall, abs=1e-4)
    assert metrics.quality["window_end_s"] == 1.0


async def test_websocket_metrics_reply_carries_the_score():
    """serve --quality-interval: the monitor rides in the batcher options; the `metrics` reply shows the score."""
    import asyncio

    from samstream.clients.ws_client import SeparationClient
    from samstream.stream.server.app import SeparationServer
    from samstream.stream.server.ops import ServerConfig

    judge = FakeJudge()
    monitor = QualityMonitor(judge, RATE, QualityConfig(interval_s=0.3, window_s=0.3))
    server = SeparationServer(HalfProcessor(), ServerConfig(port=0), model_name="half", realtime_budget_s=1e6,
                              quality_monitor=monitor)
    await server.start()
    try:
        async with await SeparationClient.connect(f"ws://127.0.0.1:{server.port}") as client:
            await client.start(RATE, text="dog barking")
            before = await client.metrics()
            for start in range(0, RATE, 1600):
                await client.send_audio(np.full(1600, 0.1, np.float32))
                await client.receive_audio()
            for _ in range(100):
                metrics = await client.metrics()
                if metrics["quality"] is not None:
                    break
                await asyncio.sleep(0.05)
            await client.flush()
    finally:
        await server.shutdown()
        monitor.close()
    assert before["quality"] is None
    assert metrics["quality"]["overall"] == 3.0 and metrics["quality"]["prompt"] == "dog barking"
    assert metrics["quality"]["window_s"] == 0.3


def test_browser_page_shows_the_score(tmp_path):
    """clients/web/app.js's showJudgeScore, run by node against stub cells."""
    import json
    import shutil
    import subprocess
    from pathlib import Path

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    source = (Path(__file__).parents[1] / "clients" / "web" / "app.js").read_text()
    start = source.index("function showJudgeScore")
    function = source[start:source.index("\n}\n", start) + 3]
    script = function + """
const cells = {"m-judge": {textContent: "", title: ""}};
function $(id) { return cells[id]; }
const shown = [];
for (const quality of [null, {error: "boom"}, {overall: 3.456, recall: 3.1, precision: 3.8, faithfulness: 4.0,
                                              window_end_s: 12.3, window_s: 5}]) {
  showJudgeScore(quality);
  shown.push([cells["m-judge"].textContent, cells["m-judge"].title]);
}
console.log(JSON.stringify(shown));
"""
    (tmp_path / "check.js").write_text(script)
    shown = json.loads(subprocess.run([node, str(tmp_path / "check.js")], capture_output=True, text=True,
                                      check=True, timeout=30).stdout)
    assert shown[0][0] == "—" and shown[1][0] == "error"
    assert shown[2] == ["3.46 at 12 s", "recall 3.10, precision 3.80, faithfulness 4.00 over 5 s of output"]


def test_serve_loads_only_the_side_models_its_flags_ask_for(parity_dir, tmp_path):
    """`samstream serve --predict-spans --quality-interval S` on a SAM Audio directory (clients/cli/serve.py)."""
    import argparse

    from fixtures.side_models import sam_directory_with_side_models
    from samstream.clients.cli.serve import attach_side_models
    from samstream.model.errors import PromptError
    from samstream.model.registry import load_separator
    from samstream.stream.regimes.sliding_window import SlidingWindowProcessor, WindowConfig

    directory = sam_directory_with_side_models(parity_dir, tmp_path / "sam")
    processor = SlidingWindowProcessor(load_separator(str(directory), progress=False),
                                       WindowConfig(window_frames=60, hop_frames=10, lookahead_frames=20))
    flags = dict(model=str(directory), span_predictor=None, judge=None, quality_window=2.0)
    lines = []
    assert attach_side_models(processor, argparse.Namespace(**flags, predict_spans=False, quality_interval=0.0),
                              lines.append) == {}
    assert processor.span_predictor is None and lines == []  # nothing asked for, nothing loaded
    options = attach_side_models(processor, argparse.Namespace(**flags, predict_spans=True, quality_interval=3.0),
                                 lines.append)
    assert processor.span_predictor is not None and len(lines) == 2
    monitor = options["quality_monitor"]
    assert monitor.config == QualityConfig(interval_s=3.0, window_s=2.0) and monitor.model_rate == 200
    monitor.close()
    with pytest.raises(PromptError, match="need a SAM Audio checkpoint"):
        attach_side_models(HalfProcessor(), argparse.Namespace(**flags, predict_spans=True, quality_interval=0.0),
                           lines.append)
