"""Batcher: batched rounds equal each stream alone, declared degradation under a slow model, fault isolation."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from test_session import DSPProcessor, VideoDSPProcessor, jittery_frames, mixture, offline, stream

from samstream.model.errors import AudioInputError
from samstream.stream.batcher import Batcher, StreamHandle
from samstream.stream.metrics import FEWER_STEPS, FULL, PASS_THROUGH
from samstream.stream.processor import Prompt, StreamInputError
from samstream.stream.session import StreamSession

NEVER = math.inf  # realtime budget for tests about exactness: never degrade, however loaded the machine


async def stream_frames(handle: StreamHandle, frames: list[np.ndarray]) -> np.ndarray:
    """Push frames one after another, then close. Returns [2, total] with the closing tail."""
    outputs = []
    for frame in frames:
        target, residual = await handle.push(frame)
        assert len(target) == len(residual) == len(frame)
        outputs.append(np.stack([target, residual]))
    outputs.append(np.stack(await handle.close()))
    return np.concatenate(outputs, axis=1)


def alone(rate: int, text: str, frames: list[np.ndarray], **processor_args) -> np.ndarray:
    return stream(StreamSession(DSPProcessor(**processor_args), rate, Prompt(text)), frames)


async def test_sixteen_streams_batched_equal_each_stream_alone():
    processor = DSPProcessor(hop=160, delay=30)
    rates = [16000, 48000, 22050, 8000] * 4
    texts = [f"prompt {'x' * i}" for i in range(16)]  # 16 different separations
    frames = [jittery_frames(mixture(0.4, rate, seed=i), seed=i) for i, rate in enumerate(rates)]
    async with Batcher(processor, max_batch=16, realtime_budget_s=NEVER) as batcher:
        handles = [await batcher.open(Prompt(text), rate) for text, rate in zip(texts, rates)]
        outputs = await asyncio.gather(*(stream_frames(h, f) for h, f in zip(handles, frames)))
    for i, (rate, text) in enumerate(zip(rates, texts)):
        expected = alone(rate, text, frames[i], hop=160, delay=30)
        assert outputs[i].shape == expected.shape == (2, sum(map(len, frames[i])) + handles[i].latency_samples)
        np.testing.assert_array_equal(outputs[i], expected)
    rows = [count for count, _ in processor.calls]
    assert max(rows) > 8 and len(rows) < sum(rows) / 4  # desynchronised streams really shared calls
    assert all(h.metrics.degraded_s == {FEWER_STEPS: 0.0, PASS_THROUGH: 0.0} for h in handles)


async def realtime(handle: StreamHandle, x: np.ndarray, frame: int) -> list:
    """Send frames at the audio's own pace without waiting for results (as a transport does)."""
    pushes = []
    for start in range(0, len(x), frame):
        pushes.append(asyncio.ensure_future(handle.push(x[start : start + frame])))
        await asyncio.sleep(frame / 16000)
    return await asyncio.gather(*pushes)


async def test_slow_model_degrades_then_recovers_and_metrics_show_it():
    # 8 steps x 6 ms = 48 ms of compute per 10 ms hop: hopelessly behind real time, even at 4 steps.
    processor = DSPProcessor(hop=160, max_steps=8, seconds_per_step=0.006)
    x = mixture(2.0, 16000)
    async with Batcher(processor, realtime_budget_s=0.05, recover_s=0.05) as batcher:
        assert batcher.reduced_steps == 4
        handles = [await batcher.open(Prompt("wind"), 16000) for _ in range(3)]
        await asyncio.gather(*(realtime(h, x[:8000], 160) for h in handles))
        for handle in handles:
            assert handle.metrics.degraded_s[PASS_THROUGH] > 0
        assert {steps for _, steps in processor.calls} == {8, 4}  # fewer steps, and fades into pass-through
        assert len(processor.calls) < 0.9 * 8000 / 160  # pass-through hops skipped the model

        # The model keeps up again: the batcher steps back, one level at a time, to full quality.
        processor.seconds_per_step = 0.0
        slow_calls, start = len(processor.calls), 8000
        while batcher.level != FULL or (3, 8) not in processor.calls[slow_calls:]:
            assert start < len(x), "the batcher did not recover"
            await asyncio.gather(*(realtime(h, x[start : start + 800], 160) for h in handles))
            start += 800
        tails = await asyncio.gather(*(h.close() for h in handles))
        assert all(len(tail[0]) == handles[0].latency_samples for tail in tails)
        assert handles[0].metrics.audio_in_s == pytest.approx(start / 16000)
        assert handles[0].metrics.compute_s > 0 and handles[0].metrics.rtf > 0


async def test_the_declared_order_and_a_gradual_recovery():
    """The level policy on chosen hop ages: falling behind degrades every live stream at once (fewer steps past
    the budget, pass-through past twice the budget); recovery steps down 1, then 2, ... streams; falling behind
    right after a step undoes that step only and doubles the recovery wait; no live stream: level 0."""
    async with Batcher(DSPProcessor(max_steps=8), realtime_budget_s=0.1, recover_s=1.0) as batcher:
        handles = [await batcher.open(Prompt("wind"), 16000) for _ in range(4)]
        afap = await batcher.open(Prompt("rain"), 16000, live=False)
        with batcher._lock:
            t = batcher._changed_at + 10
            levels = lambda: [h.level for h in handles]  # noqa: E731
            batcher._update_levels(0.15, t)
            assert levels() == [1, 1, 1, 1] and batcher.level == FEWER_STEPS
            batcher._update_levels(0.25, t + 0.1)  # the last change's backlog: not yet a new load
            assert levels() == [1, 1, 1, 1]
            batcher._update_levels(0.25, t + 0.5)
            assert levels() == [2, 2, 2, 2] and batcher.level == PASS_THROUGH
            batcher._update_levels(0.01, t + 1.2)  # not a recovery wait yet
            assert levels() == [2, 2, 2, 2]
            batcher._update_levels(0.01, t + 1.6)
            assert sorted(levels()) == [1, 2, 2, 2]  # one stream
            batcher._update_levels(0.01, t + 2.7)
            assert sorted(levels()) == [1, 1, 1, 2]  # then two
            batcher._update_levels(0.25, t + 2.8)  # too much: undo that step only
            assert sorted(levels()) == [1, 2, 2, 2] and batcher._recover_wait == 2.0
            batcher._update_levels(0.01, t + 4.0)  # the doubled wait
            assert sorted(levels()) == [1, 2, 2, 2]
            for now in (t + 4.9, t + 7.0, t + 9.1, t + 11.2, t + 13.3):
                batcher._update_levels(0.01, now)
            assert levels() == [0, 0, 0, 0] and batcher.level == FULL
            assert afap.level == FULL
        for handle in handles:
            handle.abort()
        with batcher._lock:
            handles[0].level = PASS_THROUGH
            batcher._update_levels(0.0, t + 14)
            assert batcher.level == FULL and batcher._recover_wait == 1.0  # no live stream open


async def test_bad_frames_in_one_stream_leave_every_stream_intact():
    x = mixture(0.3, 16000)
    frames = [x[i : i + 480] for i in range(0, len(x), 480)]
    bad_frames = [np.zeros(480, dtype=np.float64), np.zeros((480, 2), dtype=np.float32), np.full(480, np.nan, np.float32)]
    async with Batcher(DSPProcessor(), realtime_budget_s=NEVER) as batcher:
        handles = [await batcher.open(Prompt(text), 16000) for text in ("rain", "thunder", "wind")]
        outputs = [[] for _ in handles]
        for index, frame in enumerate(frames):
            if index % 4 == 1:
                with pytest.raises(StreamInputError):
                    await handles[1].push(bad_frames[index % 3])
            results = await asyncio.gather(*(h.push(frame) for h in handles))
            for out, result in zip(outputs, results):
                out.append(np.stack(result))
        for out, handle in zip(outputs, handles):
            out.append(np.stack(await handle.close()))
    for out, text in zip(outputs, ("rain", "thunder", "wind")):
        np.testing.assert_array_equal(np.concatenate(out, axis=1), alone(16000, text, frames))


async def test_processor_failure_fails_only_its_stream():
    x = mixture(0.3, 16000)
    frames = [x[i : i + 320] for i in range(0, len(x), 320)]
    async with Batcher(DSPProcessor(), realtime_budget_s=NEVER) as batcher:
        doomed = await batcher.open(Prompt("explode"), 16000)
        healthy = [await batcher.open(Prompt(text), 16000) for text in ("rain", "owl")]

        async def until_failure() -> BaseException:
            for frame in frames:
                try:
                    await doomed.push(frame)
                except RuntimeError as error:
                    return error
            raise AssertionError("the failing stream never reported its error")

        failure, *outputs = await asyncio.gather(until_failure(), *(stream_frames(h, frames) for h in healthy))
    assert "exploded" in str(failure)
    with pytest.raises(StreamInputError, match="failed and was closed"):
        await doomed.push(frames[0])
    for out, text in zip(outputs, ("rain", "owl")):
        np.testing.assert_array_equal(out, alone(16000, text, frames))


async def test_abort_drops_queued_hops_and_fails_waiting_calls_only_for_that_stream():
    x = mixture(0.5, 16000)
    frames = [x[i : i + 320] for i in range(0, len(x), 320)]
    processor = DSPProcessor(hop=160)
    async with Batcher(processor, realtime_budget_s=NEVER) as batcher:
        gone = await batcher.open(Prompt("rain"), 16000)
        kept = await batcher.open(Prompt("owl"), 16000)
        processor.gate.clear()  # a stalled model: every hop pushed now is still queued at the abort
        pushes = [asyncio.ensure_future(gone.push(frame)) for frame in frames]
        kept_output = asyncio.ensure_future(stream_frames(kept, frames))
        await asyncio.sleep(0.05)
        assert gone.abort() == len(x)  # every pushed sample is reported as dropped
        assert gone.abort() == 0
        processor.gate.set()
        failures = await asyncio.gather(*pushes, return_exceptions=True)
        kept_out = await kept_output
    assert all(isinstance(f, StreamInputError) and "aborted" in str(f) for f in failures)
    with pytest.raises(StreamInputError, match="aborted"):
        await gone.push(frames[0])
    np.testing.assert_array_equal(kept_out, alone(16000, "owl", frames, hop=160))
    kept_hops = len(x) // 160
    # At most the round that was already running when the model stalled computed a hop of the aborted stream.
    assert sum(rows for rows, _ in processor.calls) <= kept_hops + 1


async def test_bad_rate_frame_limit_backlog_limit_and_prompt_change():
    processor = DSPProcessor(hop=160)
    x = mixture(0.8, 16000)
    async with Batcher(processor, max_queue_hops=8, max_frame_s=0.05, realtime_budget_s=NEVER) as batcher:
        with pytest.raises(AudioInputError, match="96000"):
            await batcher.open(Prompt("dog"), 96000)
        handle = await batcher.open(Prompt("dog"), 16000)
        with pytest.raises(StreamInputError, match="too long"):
            await handle.push(x[:801])
        # A stalled model: the backlog fills up to its bound, then further audio is refused, not buffered.
        processor.gate.clear()
        pushes = [asyncio.ensure_future(handle.push(x[i : i + 320])) for i in range(0, 1280, 320)]  # 8 hops
        await asyncio.sleep(0)
        with pytest.raises(StreamInputError, match="backlog full"):
            await handle.push(x[1280:1600])
        processor.gate.set()
        first = [np.stack(out) for out in await asyncio.gather(*pushes)]
        rest = [np.stack(await handle.push(x[i : i + 320])) for i in range(1280, 6400, 320)]
        await handle.set_prompt(Prompt("a much longer prompt"))
        rest += [np.stack(await handle.push(x[i : i + 320])) for i in range(6400, len(x), 320)]
        out = np.concatenate(first + rest + [np.stack(await handle.close())], axis=1)
    aligned = out[:, handle.latency_samples :]
    assert aligned.shape == (2, len(x))
    # (The refused frame was sent again afterwards, so the stream is continuous.)
    np.testing.assert_array_equal(aligned[:, :4000], offline(x, "dog")[:, :4000])
    np.testing.assert_array_equal(aligned[:, -3000:], offline(x, "a much longer prompt")[:, -3000:])


async def test_video_frames_reach_the_stream_on_the_worker():
    frames = np.zeros((1, 4, 6, 3), dtype=np.uint8)
    async with Batcher(VideoDSPProcessor(), realtime_budget_s=NEVER) as batcher:
        handle = await batcher.open(Prompt("rain"), 16000)
        await handle.push(mixture(0.05, 16000))
        await handle.push_video(frames, np.array([0.02]))
        assert handle.session.state.video_times == [0.02]
        await handle.close()
    async with Batcher(DSPProcessor(), realtime_budget_s=NEVER) as batcher:
        handle = await batcher.open(Prompt("rain"), 16000)
        with pytest.raises(StreamInputError, match="takes no video"):
            await handle.push_video(frames, np.array([0.02]))


# ---------------------------------------------------------------------------------------------- pacing


async def paced(handle: StreamHandle, x: np.ndarray, frame: int, realtime: bool) -> np.ndarray:
    """A transport: each frame waits for room (flow control) and is fed at once; `realtime` sends at the audio's
    own pace (a live source), else as fast as the stream takes it (a file). Returns [2, len(x) + L]."""
    futures = []
    begin = asyncio.get_running_loop().time()
    for start in range(0, len(x), frame):
        if realtime:
            await asyncio.sleep(max(0.0, begin + start / 16000 - asyncio.get_running_loop().time()))
        piece = x[start : start + frame]
        await handle.wait_for_room(len(piece))
        futures.append(handle.submit(piece))
    outputs = [np.stack(out) for out in await asyncio.gather(*futures)]
    return np.concatenate(outputs + [np.stack(await handle.close())], axis=1)


async def test_streams_paced_as_fast_as_possible_are_never_degraded():
    """A slow model: the live stream degrades (the default model has one step: straight to pass-through);
    a file, paced as fast as possible, waits for room instead and gets the full-quality separation."""
    processor = DSPProcessor(hop=160, max_steps=1, seconds_per_step=0.012)  # 12 ms per 10 ms hop: behind
    x = mixture(1.5, 16000)
    async with Batcher(processor, realtime_budget_s=0.05, recover_s=0.05) as batcher:
        assert not batcher.has_fewer_steps
        live = await batcher.open(Prompt("wind"), 16000)
        afap = await batcher.open(Prompt("rain"), 16000, live=False)
        assert live.live and not afap.live
        _, file_out = await asyncio.gather(paced(live, x, 320, realtime=True), paced(afap, x, 320, realtime=False))
    assert live.metrics.degraded_s[PASS_THROUGH] > 0
    assert live.metrics.degraded_s[FEWER_STEPS] == 0  # one step: nothing fewer to run
    assert afap.metrics.degraded_s == {FEWER_STEPS: 0.0, PASS_THROUGH: 0.0}
    np.testing.assert_array_equal(file_out, alone(16000, "rain", [x], hop=160, max_steps=1))
    assert {steps for _, steps in processor.calls} == {1}


async def test_a_stalled_model_never_ends_a_live_stream():
    """The model stalls for longer than the backlog holds: the live stream's frames wait for room (they are
    never refused), the stream then passes its backlog through at once, and every sample is answered."""
    processor = DSPProcessor(hop=160)
    x = mixture(2.0, 16000)
    async with Batcher(processor, max_queue_hops=40, realtime_budget_s=0.05, recover_s=0.05) as batcher:
        handle = await batcher.open(Prompt("wind"), 16000)
        sender = asyncio.ensure_future(paced(handle, x, 320, realtime=True))
        await asyncio.sleep(0.3)
        processor.gate.clear()  # 0.8 s stall: twice what the backlog (40 hops = 0.4 s) holds
        await asyncio.sleep(0.8)
        assert not handle.session.has_room(320) and handle.error is None
        processor.gate.set()
        out = await sender
    assert out.shape == (2, len(x) + handle.latency_samples)
    assert handle.error is None and handle.metrics.degraded_s[PASS_THROUGH] > 0.3
    aligned = out[:, handle.latency_samples :]
    # Target + residual is the input, degraded or not, but for the equal-power fades into and out of pass-through.
    assert np.count_nonzero(np.abs(aligned.sum(axis=0) - x) > 1e-6) <= 4 * 320


async def test_an_idle_server_returns_to_full_quality():
    processor = DSPProcessor(hop=160, max_steps=8, seconds_per_step=0.006)
    x = mixture(0.6, 16000)
    async with Batcher(processor, realtime_budget_s=0.05, recover_s=0.1) as batcher:
        handle = await batcher.open(Prompt("wind"), 16000)
        await paced(handle, x, 160, realtime=True)
        assert handle.metrics.degraded_s[PASS_THROUGH] > 0
        for _ in range(100):  # no stream has audio waiting: the level steps down on its own
            if batcher.level == FULL:
                break
            await asyncio.sleep(0.05)
        assert batcher.level == FULL


async def test_fewer_steps_count_only_where_they_change_the_output(monkeypatch):
    """Level 1 runs fewer steps, but a state whose output does not depend on steps (the default model's speech
    expert branch) is not counted as degraded."""

    class SomeStepsMatter(DSPProcessor):
        def steps_matter(self, state) -> bool:
            return len(state.taps.nonzero()[0]) != 4  # prompt "bird": 4 taps, computed without steps

    processor = SomeStepsMatter(hop=160, max_steps=8)
    x = mixture(0.5, 16000)
    monkeypatch.setattr(Batcher, "_update_levels", lambda self, age, now: None)  # hold the levels set below
    async with Batcher(processor) as batcher:
        handles = [await batcher.open(Prompt(text), 16000) for text in ("bird", "blackbird")]
        for handle in handles:
            handle.level = FEWER_STEPS
        await asyncio.gather(*(paced(h, x, 160, realtime=False) for h in handles))
    assert {steps for _, steps in processor.calls} == {4}
    assert handles[0].metrics.degraded_s[FEWER_STEPS] == 0
    assert handles[1].metrics.degraded_s[FEWER_STEPS] == pytest.approx(len(x) / 16000 + 0.01, abs=0.02)


async def test_a_load_that_cannot_be_held_backs_the_recovery_off():
    """Recovering and falling behind again at once costs a full-quality round of every stream each time: the
    recovery wait doubles while that happens, and the level stays degraded longer instead of flapping."""
    processor = DSPProcessor(hop=160, max_steps=1, seconds_per_step=0.03)  # 30 ms per 10 ms hop: hopeless
    x = mixture(3.0, 16000)
    async with Batcher(processor, realtime_budget_s=0.03, recover_s=0.1) as batcher:
        handle = await batcher.open(Prompt("wind"), 16000)
        await paced(handle, x, 160, realtime=True)
        assert batcher._recover_wait >= 0.4  # backed off at least twice
        assert handle.metrics.degraded_s[PASS_THROUGH] > 1.5
        computed = len(processor.calls)
    assert computed < 0.5 * len(x) / 160  # most hops passed through rather than flapping back to compute


async def test_streams_that_end_free_what_the_processor_holds_for_them():
    """Native memory (the default model's speech expert: ~11 MB a stream) is invisible to Python's garbage
    collector: the processor frees it when a stream closes or is aborted, on the worker, once it is out of the
    rounds; in the synchronous path, at flush."""

    class Releasing(DSPProcessor):
        def __init__(self) -> None:
            super().__init__(hop=160)
            self.released: list = []

        def release_state(self, state) -> None:
            assert threading.current_thread().name == "samstream-batcher" or self.synchronous
            self.released.append(state)

    import threading

    processor = Releasing()
    processor.synchronous = False
    x = mixture(0.2, 16000)
    async with Batcher(processor, realtime_budget_s=NEVER) as batcher:
        closed = await batcher.open(Prompt("rain"), 16000)
        aborted = await batcher.open(Prompt("wind"), 16000)
        await closed.push(x)
        await closed.set_prompt(Prompt("a longer prompt"))  # a fade: two states for a while
        await closed.push(x)
        await closed.close()
        aborted.submit(x)
        aborted.abort()
        await batcher._call(lambda: None)  # the worker has run the controls queued before this one
    released = [id(state) for state in processor.released]
    assert id(closed.session.state) in released and id(aborted.session.state) in released
    processor.synchronous = True
    session = StreamSession(processor, 16000, Prompt("owl"))
    session.push(x)
    session.flush()
    assert processor.released[-1] is session.state
