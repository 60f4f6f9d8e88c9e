"""A speaker picked on the call's video: the visual_mask box (in process), and real calls with video against a
server whose model has a vision encoder, inside a private network namespace (fixtures/webrtc_video_scenario.py).
The embedded model's refusal of visual prompts is checked in tests/test_webrtc.py's calls."""

from __future__ import annotations

import asyncio
import fractions
import json
from pathlib import Path

import numpy as np
import pytest
from av import VideoFrame

from fixtures.netns import python_isolated
from samstream.stream.processor import Prompt
from samstream.stream.server.webrtc import (
    VIDEO_SIZE,
    PromptParts,
    VideoFeed,
    box_mask,
    check_box,
    video_frame_to_rgb,
)
from samstream.stream.server.ws import ProtocolError

SCENARIO = Path(__file__).parent / "fixtures" / "webrtc_video_scenario.py"
RATE = 48000


# ------------------------------------------------------------------------------------------- in process


def test_box_is_rasterized_at_the_working_resolution():
    mask = box_mask((0.25, 0.5, 0.75, 1.0))
    assert mask.shape == (VIDEO_SIZE, VIDEO_SIZE) and mask.dtype == bool
    rows, columns = np.nonzero(mask)
    assert (rows.min(), rows.max(), columns.min(), columns.max()) == (168, 335, 84, 251)
    assert mask.sum() == 168 * 168
    # Every pixel the box touches, so a box thinner than a pixel still marks one row or column.
    assert box_mask((0.0, 0.5, 1.0, 0.5001)).sum() == VIDEO_SIZE
    assert box_mask((0.1, 0.1, 0.2, 0.2), size=10).sum() == 1
    assert box_mask((0.0, 0.0, 1.0, 1.0)).all()


def test_malformed_boxes_are_refused_with_bad_prompt():
    assert check_box([0, 0.25, 1, 0.75]) == (0.0, 0.25, 1.0, 0.75)
    for bad in ([0.5, 0, 0.2, 1], [0, 0, 1], [0, 0, 1, 1.5], [-0.1, 0, 1, 1], [0, 0, 0, 1], ["0", 0, 1, 1],
                [True, 0, 1, 1], [0, 0, float("nan"), 1], (0, 0, 1, 1), {"x0": 0}, "0,0,1,1"):
        with pytest.raises(ProtocolError) as error:
            check_box(bad)
        assert error.value.code == "bad_prompt" and "[x0, y0, x1, y1]" in error.value.message


def test_prompt_parts_combine_the_box_with_the_other_parts():
    parts = PromptParts().update({"text": "speech", "spans": [["+", 1, 2]]})
    boxed = PromptParts(parts.text, parts.spans, parts.example, box=(0.5, 0.0, 1.0, 1.0))
    prompt = boxed.prompt()
    assert prompt.text == "speech" and prompt.spans == (("+", 1, 2),)
    np.testing.assert_array_equal(prompt.visual_mask, box_mask((0.5, 0.0, 1.0, 1.0)))
    assert boxed.describe(16000) == {"text": "speech", "spans": [["+", 1, 2]], "example_s": None,
                                     "box": [0.5, 0.0, 1.0, 1.0]}
    # A prompt message replaces only what it names: the box stays.
    assert boxed.update({"text": None, "spans": []}).prompt() == Prompt(visual_mask=box_mask((0.5, 0.0, 1.0, 1.0)))
    assert parts.prompt().visual_mask is None
    with pytest.raises(ProtocolError, match="'visual_mask' message"):
        parts.update({"box": [0, 0, 1, 1]})


def test_video_frames_are_converted_to_rgb_at_the_working_resolution():
    image = np.zeros((120, 160, 3), np.uint8)
    image[:, 80:] = (200, 40, 10)  # the right half
    frame = VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")  # what a decoder gives
    frame.pts, frame.time_base = 0, fractions.Fraction(1, 90000)
    rgb = video_frame_to_rgb(frame)
    assert rgb.shape == (VIDEO_SIZE, VIDEO_SIZE, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb[:, VIDEO_SIZE // 2 + 8 :].astype(int) - (200, 40, 10)).max() < 12
    assert rgb[:, : VIDEO_SIZE // 2 - 8].max() < 12


class PausingVideoSource:
    """A video track that hands out `count` small frames, then pauses (as a camera may)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.sent = 0

    async def recv(self):
        if self.sent == self.count:
            await asyncio.Event().wait()
        await asyncio.sleep(0)
        frame = VideoFrame.from_ndarray(np.full((8, 8, 3), self.sent, np.uint8), format="rgb24")
        self.sent += 1
        return frame


class BusyEngine:
    """A StreamHandle stand-in whose worker is busy until `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.times: list[list[float]] = []  # of each push

    async def push_video(self, frames, times_s) -> None:
        assert frames.shape == (len(times_s), VIDEO_SIZE, VIDEO_SIZE, 3) and frames.dtype == np.uint8
        await self.release.wait()
        self.times.append(list(times_s))


async def test_video_feed_skips_same_time_frames_and_drops_the_oldest_when_the_engine_is_behind():
    engine = BusyEngine()
    clock = iter([0.0, 0.0] + [0.02 * i for i in range(1, 39)])  # the 2nd frame came before any new audio
    feed = VideoFeed(PausingVideoSource(40), engine, lambda: next(clock), queue_frames=4)
    running = asyncio.ensure_future(feed.run())
    while feed.source.sent < 40:
        await asyncio.sleep(0)
    # The 1st frame went to the busy engine, the 2nd was skipped; 4 wait, the 34 older ones were dropped.
    assert (feed.skipped, feed.dropped, feed._queue.qsize(), feed.pushed) == (1, 34, 4, 0)
    engine.release.set()
    while feed.pushed < 5:
        await asyncio.sleep(0)
    # Then the newest frames, in one batch: the model gets the latest picture, and times that increase.
    assert engine.times == [[0.0], pytest.approx([0.70, 0.72, 0.74, 0.76])]
    running.cancel()


def test_a_session_takes_the_box_mask_and_the_calls_frames(streaming_vision_model_dir, one_torch_thread):
    """The box's mask fits frames at the working resolution: a session of a model with a vision encoder runs
    the visual prompt on them, and its separation differs from the same session without the box."""
    from samstream.stream.regimes import make_processor
    from samstream.stream.session import StreamSession

    processor = make_processor(str(streaming_vision_model_dir), window_s=2.0, hop_s=0.24, lookahead_s=0.2, steps=2)
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(2 * RATE)).astype(np.float32)
    frames = rng.integers(0, 256, (50, VIDEO_SIZE, VIDEO_SIZE, 3), dtype=np.uint8)
    outputs = []
    for box in (None, (0.5, 0.0, 1.0, 1.0)):
        session = StreamSession(processor, RATE, PromptParts(spans=(("+", 0.2, 0.8),), box=box).prompt())
        assert session.accepts_video
        target = []
        for i in range(0, len(audio), 1920):  # 40 ms of audio, then the frame of its time (25 frames/s)
            target.append(session.push(audio[i : i + 1920])[0])
            session.push_video(frames[i // 1920][None], np.array([(i + 1920) / RATE]))
        target.append(session.flush()[0])
        outputs.append(np.concatenate(target))
    assert len(outputs[0]) == len(outputs[1]) == len(audio) + session.latency_samples
    difference = np.abs(outputs[0] - outputs[1]).max()
    assert difference > 0.05 * np.abs(outputs[0]).max()


# ------------------------------------------------------------------------------------------- real calls


@pytest.fixture(scope="module")
def calls(tmp_path_factory, streaming_vision_model_dir) -> tuple[dict, dict[str, np.ndarray]]:
    out = tmp_path_factory.mktemp("webrtc_video")
    done = python_isolated(str(SCENARIO), str(out), str(streaming_vision_model_dir), timeout_s=90)
    assert done.returncode == 0, f"scenario failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    with np.load(out / "audio.npz") as audio:
        return json.loads((out / "result.json").read_text()), dict(audio)


def test_the_calls_video_reaches_the_model_on_the_stream_clock(calls):
    result, _ = calls
    call = result["call1"]
    final = call["metrics"][-1]
    # 15 frames/s for ~4 s; frames that came before any new audio are skipped (a few: the first ones, and any
    # that arrive in a burst).
    assert final["video_frames_pushed"] >= 0.6 * call["video_sent"]
    counted = final["video_frames_pushed"] + final["video_frames_dropped"] + final["video_frames_skipped"]
    assert counted <= call["video_sent"]
    times = np.array(call["video_times"])
    assert len(times) == final["video_frames_pushed"]
    assert np.all(np.diff(times) > 0) and times[0] >= 0 and times[-1] <= call["server_in"] / RATE
    # ... at the pace of the audio: frame k of the clip at about k / 15 s on the stream clock.
    assert np.median(np.diff(times)) == pytest.approx(1 / 15, abs=0.02)
    assert call["video_echoed"] > 0  # and the picture still comes back (echo_video)


def test_a_box_changes_the_separation(calls):
    result, audio = calls
    call = result["call1"]
    errors = [(event["code"], event["request"]) for event in call["events"] if event["type"] == "error"]
    assert errors == [("bad_prompt", "visual_mask"), ("bad_prompt", "visual_mask")]
    prompts = [event["prompt"] for event in call["events"] if event["type"] == "prompt"]
    assert prompts == [{"text": None, "spans": [["+", 0.5, 1.5]], "example_s": None, "box": [0.5, 0.1, 0.95, 0.9]}]
    assert call["metrics"][-1]["prompt"] == prompts[0]
    # Until the box was asked for, the output is exactly that of the same call without it; then it changes.
    (change,) = call["prompt_changes"]
    target, unchanged = audio["target"], audio["unchanged_target"]
    assert RATE < change < len(target) - RATE
    np.testing.assert_array_equal(target[:change], unchanged[:change])
    after = slice(change + call["answer"]["latency_samples"], None)
    assert np.abs(target[after] - unchanged[after]).max() > 0.05 * np.abs(unchanged[after]).max() > 0


def test_sample_accounting_with_video(calls):
    result, audio = calls
    call = result["call1"]
    assert call["answer"]["latency_samples"] == call["session_latency"]
    assert call["answer"]["latency_ms"] == pytest.approx(1000 * call["session_latency"] / RATE)
    assert call["server_in"] == call["server_out"] == len(audio["input"]) == len(audio["target"])
    final = call["metrics"][-1]
    assert final["samples_in"] == final["samples_out"] == call["server_in"]
    assert final["latency_samples"] == call["session_latency"] and not final["degraded"]
    # Every sent frame arrives but the few still in a jitter buffer when the stream stops.
    assert call["sent"] - call["server_in"] <= 0.1 * RATE and call["server_out"] - call["received"] <= 0.1 * RATE
    assert call["released"]


def test_a_box_without_video_is_refused_and_the_call_goes_on(calls):
    result, _ = calls
    call = result["call2"]
    errors = [event for event in call["events"] if event["type"] == "error"]
    assert [(error["code"], error["request"]) for error in errors] == [("no_video", "visual_mask")]
    assert "sends no video" in errors[0]["message"]
    assert call["metrics"][-1]["samples_in"] > 0.5 * RATE and call["received"] > 0
    assert call["released"]
