"""The live voice similarity meter (stream/voice_meter.py): its schedule off the audio path (bounded jobs, skipped
turns counted, stale readings dropped, silence not scored), and on real voices, that it tells the enrolled
speaker from another one."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from fixtures.real_audio import at_snr, real_speech
from samstream.stream.metrics import SessionMetrics
from samstream.stream.processor import Prompt
from samstream.stream.voice_meter import MonitorGroup, VoiceMeter, VoiceMeterConfig, monitors, with_voice_meter

RATE = 16000
HOP = 256


class FakeEncoder:
    """Embeddings that say which signal they came from: the first sample's sign picks the direction. A gate
    holds every job until the test lets it go."""

    def __init__(self) -> None:
        self.calls = []
        self.gate = threading.Event()
        self.gate.set()

    def embed_utterance(self, clip, rate):
        self.calls.append(("utterance", len(clip)))
        return np.array([1.0, 0.0])

    def embed_recent(self, history, rate):
        self.gate.wait(5)
        self.calls.append(("recent", len(history)))
        return np.array([1.0, 0.0]) if history[-1] > 0 else np.array([0.0, 1.0])


def feed(tap, signal: np.ndarray, target: np.ndarray | None = None) -> None:
    target = signal if target is None else target
    for start in range(0, len(signal) - HOP + 1, HOP):
        tap.observe(signal[start : start + HOP], target[start : start + HOP])


def settle(tap, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while tap._busy and time.monotonic() < deadline:
        time.sleep(0.005)


def test_readings_every_interval_and_nothing_without_an_enrollment():
    encoder = FakeEncoder()
    meter = VoiceMeter(RATE, VoiceMeterConfig(interval_s=0.5), encoder=encoder)
    metrics = SessionMetrics(latency_ms=0.0)
    tap = meter.tap(metrics, Prompt(text="speech"), delay_samples=512)
    loud = np.full(4 * RATE, 0.1, np.float32)
    feed(tap, loud)
    settle(tap)
    assert metrics.voice is None and encoder.calls == []  # no enrolled voice: no meter
    tap.set_prompt(Prompt(example=loud[: 3 * RATE]))
    for _ in range(3):  # a turn every 0.5 s of audio, each waited for: none skipped
        feed(tap, loud[: RATE // 2])
        settle(tap)
    reading = metrics.voice
    assert reading == {**reading, "input": 1.0, "output": 1.0, "enrolled_s": 3.0, "window_s": 1.6, "skipped": 0}
    assert encoder.calls.count(("utterance", 3 * RATE)) == 1  # the enrollment is embedded once
    assert encoder.calls.count(("recent", meter.window)) == 6  # input and output, three turns
    # Same voice, another text: the meter keeps its enrollment and readings.
    tap.set_prompt(Prompt(text="woman speaking", example=loud[: 3 * RATE]))
    assert metrics.voice is reading
    tap.set_prompt(Prompt(text="speech"))
    assert metrics.voice is None
    meter.close()


def test_silence_is_not_scored_and_an_output_that_lets_nothing_through_neither():
    encoder = FakeEncoder()
    meter = VoiceMeter(RATE, VoiceMeterConfig(interval_s=0.5), encoder=encoder)
    metrics = SessionMetrics(latency_ms=0.0)
    tap = meter.tap(metrics, Prompt(example=np.full(RATE, 0.1, np.float32)))
    feed(tap, np.full(2 * RATE, 1e-4, np.float32))  # -80 dBFS
    settle(tap)
    assert metrics.voice["input"] is None and metrics.voice["output"] is None
    feed(tap, np.full(2 * RATE, -0.1, np.float32), np.full(2 * RATE, -0.001, np.float32))  # output 40 dB down
    settle(tap)
    assert metrics.voice["input"] == 0.0 and metrics.voice["output"] is None
    meter.close()


def test_a_busy_meter_skips_turns_and_bounds_its_jobs():
    encoder = FakeEncoder()
    encoder.gate.clear()  # every job waits: the audio path must not
    meter = VoiceMeter(RATE, VoiceMeterConfig(interval_s=0.5, max_pending=2), encoder=encoder)
    metrics = [SessionMetrics(latency_ms=0.0) for _ in range(3)]
    taps = [meter.tap(m, Prompt(example=np.full(RATE, 0.1, np.float32))) for m in metrics]
    loud = np.full(3 * RATE, 0.1, np.float32)
    started = time.perf_counter()
    for tap in taps:
        feed(tap, loud)
    assert time.perf_counter() - started < 1.0  # observing never waits for the meter
    assert meter._pending == 2  # two jobs in flight, all sessions together
    # Session 0 and 1: one job each, their later turns skipped; session 2: no room at all.
    assert [tap.skipped for tap in taps] == [2, 2, 3]
    encoder.gate.set()
    for tap in taps:
        settle(tap)
    assert [m.voice["skipped"] for m in metrics[:2]] == [2, 2] and metrics[2].voice is None
    meter.close()


def test_a_reading_of_a_replaced_enrollment_is_dropped():
    encoder = FakeEncoder()
    encoder.gate.clear()
    meter = VoiceMeter(RATE, VoiceMeterConfig(interval_s=0.5), encoder=encoder)
    metrics = SessionMetrics(latency_ms=0.0)
    tap = meter.tap(metrics, Prompt(example=np.full(RATE, 0.1, np.float32)))
    feed(tap, np.full(2 * RATE, 0.1, np.float32))
    assert tap._busy
    tap.set_prompt(Prompt(example=np.full(2 * RATE, 0.2, np.float32)))  # a new voice while the job runs
    encoder.gate.set()
    settle(tap)
    assert metrics.voice is None
    feed(tap, np.full(RATE, 0.1, np.float32))
    settle(tap)
    assert metrics.voice["enrolled_s"] == 2.0
    meter.close()


def test_a_failing_encoder_is_reported_not_raised():
    class Broken(FakeEncoder):
        def embed_utterance(self, clip, rate):
            raise RuntimeError("no weights")

    meter = VoiceMeter(RATE, encoder=Broken())
    metrics = SessionMetrics(latency_ms=0.0)
    tap = meter.tap(metrics, Prompt(example=np.full(RATE, 0.1, np.float32)))
    feed(tap, np.full(2 * RATE, 0.1, np.float32))
    settle(tap)
    assert metrics.voice == {"error": "RuntimeError: no weights", "skipped": 0}
    meter.close()


def test_monitors_combine():
    meter = VoiceMeter(RATE, encoder=FakeEncoder())
    assert monitors(None, meter) is meter and monitors(None) is None
    group = monitors(meter, VoiceMeter(RATE, encoder=FakeEncoder()))
    assert isinstance(group, MonitorGroup)
    taps = group.tap(SessionMetrics(latency_ms=0.0), Prompt(text="speech"))
    taps.observe(np.zeros(HOP, np.float32), np.zeros(HOP, np.float32))
    taps.set_prompt(Prompt(example=np.ones(10, np.float32)))
    assert all(tap._clip is not None for tap in taps.taps)
    assert with_voice_meter({"x": 1}, RATE, 0) == {"x": 1}
    options = with_voice_meter({}, RATE, 0.5)
    assert isinstance(options["quality_monitor"], VoiceMeter) and options["quality_monitor"].config.interval_s == 0.5
    group.close()


@pytest.mark.usefixtures("one_torch_thread")
def test_on_real_voices_the_meter_tells_the_enrolled_speaker_from_another():
    """Enrolled: the LibriVox reader (3 s of their reading). The stream: them alone, another man alone, both,
    silence; readings every 0.5 s of input with GE2E. The reader's windows read higher than the other's, and
    silence reads null."""
    reader, man = real_speech(14.0, speaker="librivox"), real_speech(8.0, speaker="cards")
    reader_alone, him = reader[4 * RATE : 8 * RATE], man[: 4 * RATE]
    both = reader[8 * RATE : 12 * RATE] + at_snr(reader[8 * RATE : 12 * RATE], man[4 * RATE :], 0.0)
    stream = np.concatenate([reader_alone, him, both, np.zeros(2 * RATE, np.float32)])
    meter = VoiceMeter(RATE)
    metrics = SessionMetrics(latency_ms=0.0)
    tap = meter.tap(metrics, Prompt(example=reader[: 3 * RATE]))
    readings = {}
    for start in range(0, len(stream) - HOP + 1, HOP):
        tap.observe(stream[start : start + HOP], stream[start : start + HOP])
        settle(tap, timeout=10)
        if metrics.voice is not None:
            readings[metrics.voice["window_end_s"]] = metrics.voice["input"]
    meter.close()

    def inside(lo, hi):  # readings whose 1.6 s window lies within [lo, hi] s
        return [v for end, v in readings.items() if lo + 1.6 <= end <= hi]

    alone_reader, alone_him, silence = inside(0, 4), inside(4, 8), inside(12, 14)
    assert len(alone_reader) >= 4 and len(alone_him) >= 4 and silence and set(silence) == {None}
    assert min(alone_reader) > max(alone_him), (alone_reader, alone_him)
    assert np.mean(alone_reader) - np.mean(alone_him) > 0.08, (alone_reader, alone_him)
    assert all(v is not None and 0 < v <= 1 for v in inside(8, 12))
    assert metrics.voice["skipped"] == 0
