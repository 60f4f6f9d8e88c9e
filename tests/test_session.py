"""StreamSession: sample accounting, fixed latency, exactness against the offline path, prompt crossfade,
pass-through, bad input. Driven by a real DSP processor (below), which test_batcher.py reuses."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from samstream.model.errors import AudioInputError, PromptError
from samstream.stream.processor import Prompt, StreamInputError
from samstream.stream.resample import resample
from samstream.stream.session import StreamSession, plan_latency

MODEL_RATE = 16000
MAX_TAPS = 24


def taps_for(prompt: Prompt) -> np.ndarray:
    """The prompt picks the separation: a moving average as long as the prompt text (a low-pass "target")."""
    taps = np.zeros(MAX_TAPS, dtype=np.float32)
    length = min(len(prompt.text), MAX_TAPS)
    taps[:length] = 1.0 / length
    return taps


def separate(buffer: np.ndarray, taps: np.ndarray, lag: int, n: int) -> np.ndarray:
    """[rows, 2, n] (target, residual) for the n samples that end `lag` samples before the end of `buffer`.

    target = taps * mixture (causal FIR), residual = mixture - target. Elementwise float32 arithmetic in a fixed
    order, so a hop at a time and the whole signal at once give identical bits."""
    start = buffer.shape[1] - n - lag
    target = np.zeros((buffer.shape[0], n), dtype=np.float32)
    for k in range(MAX_TAPS):
        target += taps[:, k : k + 1] * buffer[:, start - k : start - k + n]
    mixture = buffer[:, start : start + n]
    return np.stack([target, mixture - target], axis=1)


def offline(u: np.ndarray, text: str) -> np.ndarray:
    """The whole-signal separation, time-aligned with u: [2, len(u)]."""
    buffer = np.concatenate([np.zeros(MAX_TAPS - 1, dtype=np.float32), u])[None]
    return separate(buffer, taps_for(Prompt(text))[None], 0, len(u))[0]


@dataclass
class DSPState:
    taps: np.ndarray
    history: np.ndarray  # the last MAX_TAPS - 1 + delay input samples
    fails: bool  # prompt "explode": process raises (fault isolation tests)


class DSPProcessor:
    """A ChunkProcessor with a configurable hop and algorithmic delay (the delay a look-ahead would cost)."""

    def __init__(self, hop: int = 160, delay: int = 0, max_steps: int = 4, seconds_per_step: float = 0.0) -> None:
        self.sample_rate = MODEL_RATE
        self.hop_samples = hop
        self.delay_samples = delay
        self.max_steps = max_steps
        self.seconds_per_step = seconds_per_step  # > 0: an artificially slow model
        self.gate = threading.Event()  # cleared: process blocks until it is set (a stalled model)
        self.gate.set()
        self.calls: list[tuple[int, int]] = []  # (rows, steps) of every process call

    def init_state(self, prompt: Prompt) -> DSPState:
        history = np.zeros(MAX_TAPS - 1 + self.delay_samples, dtype=np.float32)
        return DSPState(taps_for(prompt), history, prompt.text == "explode")

    def set_prompt(self, state: DSPState, prompt: Prompt) -> None:
        state.taps = taps_for(prompt)
        state.fails = prompt.text == "explode"

    def process(self, states: list[DSPState], hops: np.ndarray, steps: int) -> np.ndarray:
        self.gate.wait()
        time.sleep(self.seconds_per_step * steps)
        self.calls.append((len(states), steps))
        if any(state.fails for state in states):  # before touching any state, as the protocol asks
            raise RuntimeError("the model exploded")
        buffer = np.concatenate([np.stack([state.history for state in states]), hops], axis=1)
        out = separate(buffer, np.stack([state.taps for state in states]), self.delay_samples, self.hop_samples)
        for state, row in zip(states, buffer):
            state.history = row[-len(state.history) :].copy()
        return out

    def flush_hops(self) -> int:
        return math.ceil(self.delay_samples / self.hop_samples)


def mixture(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 3100 * t) + 0.05 * noise).astype(np.float32)


def jittery_frames(x: np.ndarray, seed: int) -> list[np.ndarray]:
    """Random frame sizes 1..4096, with runs of tiny frames and the odd empty one (transport jitter)."""
    rng = np.random.default_rng(seed)
    frames, start = [], 0
    while start < len(x):
        size = int(rng.choice([0, int(rng.integers(1, 8)), int(rng.integers(1, 4097))], p=[0.05, 0.35, 0.6]))
        frames.append(x[start : start + size])
        start += size
    return frames


def stream(session: StreamSession, frames: list[np.ndarray]) -> np.ndarray:
    """Push every frame, then flush; checks each push returns as much as it got. Returns [2, total]."""
    outputs = []
    for frame in frames:
        target, residual = session.push(frame)
        assert len(target) == len(residual) == len(frame)
        outputs.append(np.stack([target, residual]))
    tail = np.stack(session.flush())
    assert tail.shape == (2, session.latency_samples)
    return np.concatenate(outputs + [tail], axis=1)


def reference(x: np.ndarray, client_rate: int, text: str) -> np.ndarray:
    """Offline path that resamples the same way: one-shot resampling in, whole-signal separation, and out.
    [2, len(x)]."""
    u = resample(x, client_rate, MODEL_RATE) if client_rate != MODEL_RATE else x
    separated = offline(np.concatenate([u, np.zeros(MODEL_RATE // 2, dtype=np.float32)]), text)
    if client_rate != MODEL_RATE:
        # A resampler's first few output samples see the zeros before the signal; the stream's output one starts in
        # the silence before the processor's delayed output, so start this one in silence too (a whole number
        # of client samples of it, cut off again afterwards).
        period = MODEL_RATE // math.gcd(MODEL_RATE, client_rate)
        silence = period * math.ceil(400 / period)
        separated = np.concatenate([np.zeros((2, silence), dtype=np.float32), separated], axis=1)
        separated = resample(separated.T, MODEL_RATE, client_rate).T
        separated = separated[:, silence * client_rate // MODEL_RATE :]
    return separated[:, : len(x)]


def test_latency_plan_is_exact_and_covers_the_pipeline():
    # Equal rates: processor delay plus a hop less one sample of buffering, nothing else.
    assert plan_latency(16000, 16000, hop=160, delay=100, in_holdback=0, out_holdback=0).latency == 259
    # 22.05 kHz: 320 model samples are 441 client samples, so the delay is padded to a multiple of 320.
    plan = plan_latency(22050, 16000, hop=320, delay=100, in_holdback=644, out_holdback=1276)
    assert plan.compensation == 220
    assert plan.latency == plan.preroll + 441
    assert plan.latency * 16000 / 22050 >= 100 + 319 + 644 + 1276 * 16000 / 22050


def test_equal_rate_stream_is_bit_exact_with_offline():
    session = StreamSession(DSPProcessor(hop=160, delay=100), 16000, Prompt("dog barking"))
    latency = session.latency_samples
    assert latency == 100 + 159
    assert session.metrics.latency_ms == pytest.approx(1000 * latency / 16000)
    x = mixture(1.0, 16000)
    out = stream(session, jittery_frames(x, seed=1))
    assert out.shape == (2, len(x) + latency)  # L pre-roll zeros, then one sample per input sample
    assert not out[:, :latency].any()
    np.testing.assert_array_equal(out[:, latency:], reference(x, 16000, "dog barking"))
    assert session.metrics.audio_in_s == pytest.approx(1.0)
    assert session.metrics.audio_out_s == pytest.approx(1.0 + latency / 16000)


@pytest.mark.parametrize("client_rate", [8000, 22050, 44100, 48000])
def test_resampled_stream_matches_offline(client_rate):
    session = StreamSession(DSPProcessor(hop=320, delay=48), client_rate, Prompt("speech"))
    latency = session.latency_samples
    x = mixture(0.6, client_rate, seed=client_rate)
    out = stream(session, jittery_frames(x, seed=client_rate))
    assert out.shape == (2, len(x) + latency)
    assert not out[:, : session.plan.preroll].any()
    expected = reference(x, client_rate, "speech")
    assert np.abs(out[:, latency:] - expected).max() < 2e-5
    # Off by one sample would show: the tolerance above really pins the latency.
    assert np.abs(out[:, latency + 1 :] - expected[:, :-1]).max() > 1e-2


def test_large_frames_are_split_and_flush_ends_the_stream():
    session = StreamSession(DSPProcessor(), 48000, Prompt("bird"), max_frame_s=0.1)
    x = mixture(0.5, 48000)
    out = stream(session, [x])  # one frame of 5 x max_frame
    assert out.shape == (2, len(x) + session.latency_samples)
    with pytest.raises(StreamInputError, match="ended"):
        session.push(x[:10])
    with pytest.raises(StreamInputError, match="already flushed"):
        session.flush()


def test_prompt_change_crossfades_without_click():
    # 1 kHz is nulled by the 16-tap average and kept by the 3-tap one: the two targets differ by ~0.4.
    t = np.arange(16000) / 16000
    x = (0.4 * np.sin(2 * np.pi * 100 * t) + 0.4 * np.cos(2 * np.pi * 1000 * t)).astype(np.float32)
    old, new = "dog", "sixteen char txt"
    session = StreamSession(DSPProcessor(hop=160), 16000, Prompt(old), crossfade_ms=20)
    latency, switch = session.latency_samples, 8000  # a whole number of hops: the switch hop is known
    first = np.stack(session.push(x[:switch]))
    session.set_prompt(Prompt(new))
    out = np.concatenate([first, np.stack(session.push(x[switch:])), np.stack(session.flush())], axis=1)[0]

    before, after = offline(x, old)[0], offline(x, new)[0]
    fade = slice(switch + latency, switch + latency + 320)  # 20 ms, in output samples
    np.testing.assert_array_equal(out[latency : fade.start], before[: switch])
    np.testing.assert_array_equal(out[fade.stop :], after[switch + 320 :])
    theta = (np.arange(320) + 0.5) * np.pi / 640
    fade_expected = before[switch : switch + 320] * np.cos(theta) + after[switch : switch + 320] * np.sin(theta)
    np.testing.assert_allclose(out[fade], fade_expected, atol=1e-6)

    steady_jump = max(np.abs(np.diff(before)).max(), np.abs(np.diff(after)).max())
    bound = math.sqrt(2) * steady_jump + 0.01
    assert np.abs(np.diff(out[latency:])).max() <= bound
    hard_switch = np.concatenate([before[:switch], after[switch:]])
    assert np.abs(np.diff(hard_switch)).max() > bound  # what the crossfade avoids


def test_pass_through_emits_the_delayed_mixture_and_fades_both_ways():
    processor = DSPProcessor(hop=160, delay=40)
    session = StreamSession(processor, 16000, Prompt("crow"), crossfade_ms=10)
    latency = session.latency_samples
    x = mixture(0.5, 16000)
    session.feed(x)
    plan = [False] * 10 + [True] * 20 + [False] * 20  # 50 hops
    for passthrough in plan:
        states = session.begin_hop(passthrough)
        outputs = processor.process(states, np.repeat(session.audio[None], len(states), axis=0), 4) if states else None
        session.end_hop(outputs, level=2 if passthrough else 0)
    assert session.pending_hops == 0
    assert [rows for rows, _ in processor.calls] == [1] * (10 + 1 + 20)  # no call in pass-through but the first
    out = np.stack(session.pull(session.output_available))[:, latency:]  # out[:, i] <-> input sample i
    hop, delay = 160, 40  # hop k covers input samples [k*hop - delay, (k+1)*hop - delay)
    separated = offline(x, "crow")
    np.testing.assert_array_equal(out[:, : 10 * hop - delay], separated[:, : 10 * hop - delay])
    passed = slice(11 * hop - delay, 30 * hop - delay)
    np.testing.assert_array_equal(out[:, passed], np.stack([x[passed], np.zeros_like(x[passed])]))
    # The fades (hops 10 and 30) stay within equal power's bound of their two sources: no click.
    for k in (10, 30):
        seam = slice(k * hop - delay - 1, (k + 1) * hop - delay + 1)
        assert np.abs(np.diff(out[:, seam])).max() <= math.sqrt(2) * np.abs(np.diff(x)).max()
    assert session.metrics.degraded_s[2] == pytest.approx(20 * hop / 16000)


@pytest.mark.parametrize(
    "frame, message",
    [
        (np.zeros(100, dtype=np.int16), "float32"),
        (np.zeros(100, dtype=np.float64), "float32"),
        (np.zeros((100, 2), dtype=np.float32), "mono"),
        (np.array([0.1, np.nan, 0.2], dtype=np.float32), "NaN"),
        ([0.0, 0.1], "numpy"),
    ],
)
def test_bad_frames_are_rejected_and_the_stream_goes_on(frame, message):
    session = StreamSession(DSPProcessor(), 16000, Prompt("rain"))
    x = mixture(0.3, 16000)
    first = np.stack(session.push(x[:1000]))
    with pytest.raises(StreamInputError, match=message):
        session.push(frame)
    rest = np.stack(session.push(x[1000:]))
    out = np.concatenate([first, rest, np.stack(session.flush())], axis=1)
    np.testing.assert_array_equal(out[:, session.latency_samples :], offline(x, "rain"))


def test_bad_rates_and_prompts_get_clear_errors():
    with pytest.raises(AudioInputError, match="between 8000 and 48000"):
        StreamSession(DSPProcessor(), 96000, Prompt("x"))
    with pytest.raises(PromptError):
        Prompt(spans=(("*", 1.0, 2.0),))
    with pytest.raises(PromptError, match="needs text"):
        Prompt()
    session = StreamSession(DSPProcessor(), 16000, Prompt("x"), max_frame_s=0.01)
    with pytest.raises(StreamInputError, match="too long"):
        session.feed(np.zeros(161, dtype=np.float32))


def test_prompt_key_identifies_prompts():
    example = np.ones(10, dtype=np.float32)
    a = Prompt("dog", spans=[("+", 1, 2)], example=example)
    example[0] = 5.0  # the prompt holds its own copy
    assert a == Prompt("dog ", spans=(("+", 1.0, 2.0),), example=np.ones(10, dtype=np.float32))
    assert a.key != Prompt("dog", spans=(("+", 1.0, 2.0),), example=example).key
    assert len({a, Prompt("dog", spans=(("+", 1.0, 2.0),), example=np.ones(10, dtype=np.float32))}) == 1


class VideoDSPProcessor(DSPProcessor):
    """DSPProcessor that takes video, as SAM Audio with a vision tower does; records what each state got."""

    accepts_video = True

    def init_state(self, prompt: Prompt) -> DSPState:
        state = super().init_state(prompt)
        state.video_times = []
        return state

    def push_video(self, state: DSPState, frames: np.ndarray, times: np.ndarray) -> None:
        assert frames.dtype == np.uint8 and frames.shape[0] == len(times)
        state.video_times += list(times)


def test_video_reaches_every_live_state_and_models_without_video_refuse_it():
    session = StreamSession(VideoDSPProcessor(), 16000, Prompt("rain"))
    frames = np.zeros((2, 4, 6, 3), dtype=np.uint8)
    session.push_video(frames, np.array([0.0, 0.04]))
    session.push(mixture(0.1, 16000))
    session.set_prompt(Prompt("owl"))  # a fade: the old separation keeps running on a fork of the state
    session.push_video(frames, np.array([0.08, 0.12]))
    old, new = session._fade.old, session._fade.new
    assert old is not new and old.video_times == new.video_times == [0.0, 0.04, 0.08, 0.12]

    plain = StreamSession(DSPProcessor(), 16000, Prompt("rain"))
    assert not plain.accepts_video
    with pytest.raises(StreamInputError, match="takes no video: visual-mask prompts need a SAM Audio checkpoint"):
        plain.push_video(frames, np.array([0.0, 0.04]))


class ComplementDSPProcessor(DSPProcessor):
    """The DSP processor declaring what its residual is (mixture − target), as the block-causal models do."""

    residual_is_complement = True


@pytest.mark.parametrize("client_rate", [48000, 44100, 8000])
def test_preroll_is_zeros_and_a_complement_residual_keeps_the_whole_band(client_rate):
    # Delay 0: the processor's first output sample is already signal, and the output resampler's kernel
    # reaches back from it into the pre-roll; those samples answer no input and must be zeros.
    session = StreamSession(ComplementDSPProcessor(hop=320, delay=0), client_rate, Prompt("speech"))
    latency = session.latency_samples
    x = mixture(0.6, client_rate, seed=3)
    x[::7] += 0.2  # energy up to the client's Nyquist frequency, far above what the model rate carries
    out = stream(session, jittery_frames(x, seed=client_rate))
    assert not out[:, :latency].any()
    target, residual = out[:, latency:]
    expected = reference(x, client_rate, "speech")[0]
    assert np.abs(target - expected).max() < 2e-5  # the target is the resampled separation, as before
    np.testing.assert_allclose(target + residual, x, atol=1e-6)  # the residual is the client's input − target


def test_a_hop_waits_from_the_frame_that_completes_it():
    """The degradation signal: a hop's age runs from the arrival of the audio completing it, not from an
    earlier frame that completed none (that made every hop up to a frame older than it was)."""
    session = StreamSession(DSPProcessor(hop=160), 16000, Prompt("owl"))
    x = mixture(0.1, 16000)
    session.feed(x[:100])  # completes no hop
    time.sleep(0.05)
    session.feed(x[100:200])  # completes the first
    assert session.pending_hops == 1 and session.backlog_age(time.monotonic()) < 0.03
    session.begin_hop(passthrough=False)
    assert session.backlog_age(time.monotonic()) == 0.0
