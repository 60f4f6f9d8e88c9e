"""WebRTC transport: frame conversion, Opus, output mix, prompt parts (in process), and real calls
(aiortc client <-> server) inside a private network namespace (tests/fixtures/webrtc_scenario.py)."""

from __future__ import annotations

import fractions
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from av import AudioFrame, CodecContext

from fixtures.netns import python_isolated
from fixtures.signals import best_lag, si_sdr, tonal_mixture
from samstream.stream.media import FRAME, RATE, OpusPacketEncoder, frame_to_mono, mono_to_frame
from samstream.stream.server.webrtc import InputHistory, OutputMix, PromptParts
from samstream.stream.server.ws import ProtocolError

SCENARIO = Path(__file__).parent / "fixtures" / "webrtc_scenario.py"
LATENCY = 4087  # the random-weight embedded model's session latency at 48 kHz (checked against the session)


# ------------------------------------------------------------------------------------------- in process


def test_frame_to_mono_downmixes_aiortc_frames():
    left = np.arange(960, dtype=np.int16)
    right = -2 * np.arange(960, dtype=np.int16)
    packed = np.stack([left, right], axis=1).reshape(1, -1)  # what aiortc's Opus decoder gives: s16 stereo
    frame = AudioFrame.from_ndarray(packed, format="s16", layout="stereo")
    frame.sample_rate = RATE
    expected = ((left.astype(np.float64) + right) / 2 / 32768).astype(np.float32)
    np.testing.assert_array_equal(frame_to_mono(frame), expected)

    planar = AudioFrame.from_ndarray(np.stack([left, right]).astype(np.float32) / 32768, format="fltp", layout="stereo")
    np.testing.assert_allclose(frame_to_mono(planar), expected, atol=1e-7)


def test_mono_to_frame_round_trip_and_clipping():
    pcm = np.array([0.0, 0.5, -0.5, 1.5, -1.5], dtype=np.float32)
    frame = mono_to_frame(pcm, pts=960)
    assert (frame.pts, frame.sample_rate, frame.time_base) == (960, RATE, fractions.Fraction(1, RATE))
    np.testing.assert_array_equal(frame_to_mono(frame), [0.0, 0.5, -0.5, 32767 / 32768, -1.0])


def test_opus_encoder_packets_every_20_ms_and_keeps_the_waveform():
    audio = tonal_mixture(1.0)
    encoder = OpusPacketEncoder()
    packets = []
    for start in range(0, len(audio), 700):  # blocks that are not whole packets
        packets += encoder.encode(audio[start : start + 700])
    assert len(packets) == len(audio) // FRAME
    assert [packet.pts for packet in packets] == [FRAME * i for i in range(len(packets))]
    decoder = CodecContext.create("libopus", "r")
    decoded = np.concatenate([frame_to_mono(frame) for packet in packets for frame in decoder.decode(packet)])
    lag = best_lag(decoded, audio, 1000)
    assert lag == 120  # "lowdelay" Opus: 2.5 ms look-ahead
    assert si_sdr(decoded[lag:], audio[: len(decoded) - lag]) > 25


def test_output_mix_ramps_gain_changes_over_one_frame():
    target = np.ones(960, dtype=np.float32)
    residual = np.full(960, 2.0, dtype=np.float32)
    mix = OutputMix()
    np.testing.assert_array_equal(mix.apply(target, residual), target)
    mix.set(0.0, 1.0)
    ramp = mix.apply(target, residual)
    assert ramp[0] == pytest.approx(1.0 + 1 / 960, abs=1e-5) and ramp[-1] == pytest.approx(2.0)
    assert np.all(np.diff(ramp) > 0)  # no jump: a click-free change
    np.testing.assert_array_equal(mix.apply(target, residual), residual)
    for bad in ((-1, 0), (0, 3), ("a", 0), (float("nan"), 0)):
        with pytest.raises(ProtocolError) as error:
            mix.set(*bad)
        assert error.value.code == "bad_message"


def test_input_history_keeps_the_last_seconds():
    history = InputHistory(seconds=1.0)
    ramp = np.arange(3 * RATE // 2, dtype=np.float32)
    for start in range(0, len(ramp), 1000):
        history.write(ramp[start : start + 1000])
    np.testing.assert_array_equal(history.last(0.5), ramp[-RATE // 2 :])
    np.testing.assert_array_equal(history.last(5.0), ramp[-RATE:])  # only what is kept


def test_prompt_parts_replace_only_what_a_message_names():
    parts = PromptParts().update({"text": "dog barking", "spans": [["+", 1, 2]]})
    assert parts.prompt().text == "dog barking" and parts.spans == (("+", 1, 2),)
    parts = parts.update({"type": "prompt", "spans": []})
    assert parts.text == "dog barking" and parts.spans == ()
    parts.example = np.ones(1600, dtype=np.float32)
    cleared = parts.update({"text": None})
    assert cleared.text is None and cleared.example is not None
    with pytest.raises(ProtocolError, match="needs text"):
        cleared.update({"example": None}).prompt()
    for bad in ({"text": 3}, {"spans": "+:1-2"}, {"spans": [["*", 1, 2]]}, {"example": "AAAA"}, {"colour": "red"}):
        with pytest.raises(ProtocolError) as error:
            PromptParts().update(bad).prompt()
        assert error.value.code == "bad_prompt"


# ------------------------------------------------------------------------------------------- real calls


@pytest.fixture(scope="module")
def calls(tmp_path_factory) -> tuple[dict, dict[str, np.ndarray]]:
    out = tmp_path_factory.mktemp("webrtc")
    done = python_isolated(str(SCENARIO), str(out), timeout_s=160)
    assert done.returncode == 0, f"scenario failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    with np.load(out / "audio.npz") as audio:
        return json.loads((out / "result.json").read_text()), dict(audio)


def test_separated_track_is_the_engine_separation(calls):
    result, audio = calls
    call = result["call1"]
    assert call["answer"]["latency_samples"] == call["session_latency"] == LATENCY
    assert call["answer"]["sample_rate"] == RATE and call["answer"]["latency_ms"] == pytest.approx(1000 * LATENCY / RATE)
    # Exactly what a StreamSession computes from the same input: WebRTC adds nothing and drops nothing.
    np.testing.assert_array_equal(audio["call1_target"], audio["call1_expected_target"])
    np.testing.assert_array_equal(audio["call1_residual"], audio["call1_expected_residual"])
    # ... which is the offline separation of that input, L samples later.
    target, offline = audio["call1_target"], audio["call1_offline_target"]
    assert si_sdr(target[LATENCY:], offline[: len(target) - LATENCY]) > 30


def test_sample_accounting(calls):
    result, audio = calls
    call = result["call1"]
    assert call["server_in"] == call["server_out"] == len(audio["call1_input"]) == len(audio["call1_target"])
    final = call["metrics"][-1]
    assert final["samples_in"] == final["samples_out"] == call["server_in"]
    assert final["latency_samples"] == LATENCY and not final["degraded"]
    # Every sent frame arrives but the last few, which wait in the receiver's jitter buffer for packets
    # that never come (the silent tail covers them and the latency).
    assert call["sent"] - call["server_in"] <= 0.1 * RATE and call["server_out"] - call["received"] <= 0.1 * RATE
    assert call["sent"] - len(audio["call1_sent"]) >= LATENCY + 0.2 * RATE


def test_caller_hears_the_separation(calls):
    result, audio = calls
    heard, target = audio["call1_heard"], audio["call1_target"]
    lag = best_lag(heard, target, 2000)
    assert lag == 120  # the Opus look-ahead: the packets carry the server's output sample for sample
    assert si_sdr(heard[lag : lag + len(target)], target[: len(heard) - lag]) > 25
    # Against the sent file: the reported latency L plus Opus both ways.
    sent = audio["call1_sent"]
    lag = best_lag(heard, sent, 20000)
    assert lag == LATENCY + 2 * 120


def test_data_channel_prompt_changes_metrics_and_errors(calls):
    result, audio = calls
    call = result["call2"]
    prompts = [event["prompt"] for event in call["events"] if event["type"] == "prompt"]
    assert prompts[0] == {"text": None, "spans": [["+", 0.5, 1.5]], "example_s": 1.0, "box": None}  # enroll: 1 s
    held = prompts[1]["spans"][1]  # span_begin: open while the button is held
    assert held[0] == "-" and held[2] - held[1] > 3600
    released = prompts[2]["spans"][1]  # span_end: closed on the stream clock, ~0.3 s later
    assert released[0] == "-" and released[1] == held[1] and 0.1 < released[2] - released[1] < 2.0
    assert call["metrics"][-1]["prompt"] == prompts[2]
    errors = [(event["code"], event["request"]) for event in call["events"] if event["type"] == "error"]
    assert errors == [("unknown_type", "nope"), ("bad_message", "span_end"), ("bad_json", None),
                      ("bad_message", "enroll"), ("no_vision", "visual_mask")]
    refusal = next(event["message"] for event in call["events"] if event.get("code") == "no_vision")
    assert "cannot use visual prompts" in refusal and "enroll this voice" in refusal
    # The output is the unchanged prompt's exactly until the first change was asked for, then it changes.
    change = call["prompt_changes"][0]
    target, unchanged = audio["call2_target"], audio["call2_unchanged_target"]
    assert 0.5 * RATE < change
    np.testing.assert_array_equal(target[:change], unchanged[:change])
    # (A random-weight model reacts to its prompt only slightly, but the difference is far above rounding.)
    assert np.abs(target[change + RATE // 2 :] - unchanged[change + RATE // 2 :]).max() > 1e-5


def test_output_gains_change_what_the_caller_hears(calls):
    result, audio = calls
    call = result["call2"]
    heard, mixture = audio["call2_heard"], audio["call2_input"]
    # Target + residual: the input itself, L samples late (plus Opus both ways); compared before the first
    # prompt change, whose equal-power crossfade lifts the sum for a moment.
    start, end = RATE // 10, call["prompt_changes"][0] - LATENCY
    assert end - start > 0.3 * RATE
    lag = best_lag(heard[start:], mixture[start:end], 20000)
    assert lag == LATENCY + 120
    assert si_sdr(heard[start + lag : end + lag], mixture[start:end]) > 25
    # After {"type": "output", "target": 0, "residual": 1}: the residual alone (from the frame after the ramp).
    (switch,) = call["mix_changes"]
    residual = audio["call2_residual"][switch + FRAME :]
    heard_after = heard[switch + FRAME + 120 :][: len(residual)]
    assert len(heard_after) > 0.5 * RATE
    assert si_sdr(heard_after, residual[: len(heard_after)]) > 25


def test_hang_up_releases_the_session(calls):
    result, _ = calls
    assert result["call1"]["released"] and result["call2"]["released"]


def test_load_degrades_a_call_and_never_ends_it(calls):
    """The model stalled for 3 s mid-call (longer than the session's 2 s backlog): the call was degraded
    (pass-through, declared in its metrics), not ended; every sample of it came back."""
    call = calls[0]["call3"]
    assert not [event for event in call["events"] if event["type"] == "error"]
    assert call["degraded_s"]["2"] > 0.5 and call["metrics"][-1]["degraded_s"]["2"] > 0.5
    assert call["server_in"] == call["server_out"] and call["dropped"] == 0
    assert call["sent"] - call["server_in"] <= 0.1 * RATE and call["server_out"] - call["received"] <= 0.1 * RATE
    assert call["released"]


def test_signalling_errors(calls):
    result, _ = calls
    replies = result["signalling"]["replies"]
    codes = [reply.get("code") for reply in replies]
    assert codes == ["not_started", "bad_message", "bad_prompt", None, "bad_message"]
    assert replies[3] == {"type": "webrtc_pong", "call": False}
    assert "no audio track" in replies[4]["message"]
    assert result["signalling"]["released"]  # refused offers leave no session behind


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
