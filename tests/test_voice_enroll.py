"""Streaming enrollment ("the last N seconds of my input are the voice to keep") over the WebSocket protocol:
the clip is exactly the last N seconds the server received, the prompt switches to it, refusals have their codes;
and through the real server with the default model, 3 s of the live stream enroll a voice as well as a clip file
of that voice does, with the voice meter reporting on the way."""

from __future__ import annotations

import asyncio
import json
import math
import sys

import numpy as np
import pytest
from test_ws_protocol import error_of, mixture, running_server, stack, url

from fixtures.real_audio import at_snr, real_speech
from fixtures.signals import si_sdr
from samstream.clients.ws_client import SeparationClient
from samstream.stream.server.app import SeparationServer
from samstream.stream.server.ops import ServerConfig
from samstream.stream.server.enroll import InputHistory, enrollment_clip, sounding_seconds
from samstream.stream.server.ws import ERROR_CODES

RATE = 16000


def test_input_history_and_the_enrollment_checks():
    history = InputHistory(seconds=2.0, rate=RATE)
    speech = real_speech(3.0)
    for start in range(0, len(speech), 777):
        history.write(speech[start : start + 777])
    assert history.total == len(speech)
    np.testing.assert_array_equal(enrollment_clip(history, 1.5), speech[-24000:])
    np.testing.assert_array_equal(history.last(5.0), speech[-2 * RATE :])  # only what is kept
    assert sounding_seconds(speech, RATE) > 2.0 and sounding_seconds(np.zeros(RATE, np.float32), RATE) == 0
    history.write(np.zeros(2 * RATE, np.float32) + 1e-4)  # -80 dBFS: no voice in it
    with pytest.raises(Exception) as refused:
        enrollment_clip(history, 2.0)
    assert refused.value.code == "not_enough_audio" and "silent" in refused.value.message
    with pytest.raises(Exception) as refused:
        enrollment_clip(InputHistory(rate=RATE), 1.0)
    assert refused.value.code == "not_enough_audio" and "0.00 s heard" in refused.value.message
    assert "not_enough_audio" in ERROR_CODES


async def test_enroll_takes_the_last_seconds_received_and_switches_the_prompt(processor):
    x = mixture(3.0, RATE, seed=5)
    frames = [x[i : i + 1600] for i in range(0, len(x), 1600)]
    async with running_server(processor) as server:
        async with await SeparationClient.connect(url(server)) as client:
            assert await error_of(client.enroll(2.0)) == "not_started"
            started = await client.start(RATE, spans=[("+", 0.1, 0.4)], format="float32")
            session = server.sessions[started["session"]].session
            outputs = []
            for index, frame in enumerate(frames):
                if index == 4:  # 0.4 s heard: too little for 0.5 s of voice
                    assert await error_of(client.enroll(0.5)) == "not_enough_audio"
                if index == 20:  # 2.0 s heard
                    for bad in (0.1, 10.5, "3", True, math.nan):
                        assert await error_of(client.enroll(bad)) == "bad_message"
                    assert await error_of(client.request({"type": "enroll", "text": 5})) == "bad_prompt"
                    assert session.prompt.spans  # refusals left the prompt alone
                    enrolled = await client.enroll(1.5)
                await client.send_audio(frame)
                outputs.append(await client.receive_audio())
            metrics = await client.metrics()
            await client.flush()
            outputs.append(await client.receive_audio())
    assert enrolled == {**enrolled, "type": "enrolled", "session": started["session"], "seconds": 1.5,
                        "from_s": 0.5, "to_s": 2.0}
    assert enrolled["understood"] is None  # the random-weight model does not say
    # The prompt is the clip alone: exactly the 1.5 s before the message (float32 at the model rate: no resampling).
    assert session.prompt.text is None and session.prompt.spans == ()
    np.testing.assert_array_equal(session.prompt.example, x[RATE // 2 : 2 * RATE])
    assert "voice" in metrics and metrics["voice"] is None  # no voice meter on this server
    # Until the enrollment the output is the first prompt's; after it, another separation.
    latency = started["latency_samples"]
    unchanged = (await asyncio.to_thread(_in_process, processor, x))[:, latency:]
    out = stack(outputs)[:, latency:]
    np.testing.assert_array_equal(out[:, : int(1.8 * RATE)], unchanged[:, : int(1.8 * RATE)])
    assert np.abs(out[:, int(2.3 * RATE) :] - unchanged[:, int(2.3 * RATE) : len(x)]).max() > 1e-6


def _in_process(processor, x):
    from test_ws_protocol import in_process

    from samstream.stream.processor import Prompt

    return in_process(processor, RATE, Prompt(spans=(("+", 0.1, 0.4),)), [x[i : i + 1600] for i in range(0, len(x), 1600)])


async def test_enroll_from_pcm16_at_another_rate_and_with_text(processor):
    rate = 48000
    speech = real_speech(1.5, rate)
    async with running_server(processor) as server:
        async with await SeparationClient.connect(url(server)) as client:
            started = await client.start(rate, text="speech")
            await client.send_audio(speech[: rate])
            await client.receive_audio()
            await client.send_audio(np.zeros(rate // 2, np.float32))  # the voice, then half a second of silence
            await client.receive_audio()
            assert await error_of(client.enroll(0.5)) == "not_enough_audio"  # the last 0.5 s are silent
            enrolled = await client.enroll(1.5, text="woman speaking")
            prompt = server.sessions[started["session"]].session.prompt
            await client.flush()
    assert enrolled["seconds"] == 1.5 and enrolled["to_s"] == 1.5
    assert prompt.text == "woman speaking" and len(prompt.example) == round(1.5 * RATE)  # resampled to 16 kHz
    pcm16 = np.round(speech[:rate] * 32768) / 32768  # what the wire carried
    assert si_sdr(prompt.example[: RATE - 200], pcm16[::3][: RATE - 200]) > 30


# ------------------------------------------------------------------------ the default model, real voices


@pytest.fixture(scope="module")
def default_model():
    import torch

    from samstream.stream.regimes import make_processor

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield make_processor("tiny")
    torch.set_num_threads(threads)


SOLO_S, TOGETHER_S = 3.0, 6.0


def call(target: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The target talks alone for SOLO_S, then the other joins at the same level (0 dB): (mixture, target part)."""
    solo, together = round(SOLO_S * RATE), round(TOGETHER_S * RATE)
    kept = target[: solo + together]
    joined = np.concatenate([np.zeros(solo, np.float32), at_snr(kept[solo:], other[:together], 0.0)])
    return (kept + joined).astype(np.float32), kept


async def run_stream(server, x: np.ndarray, *, example=None, enroll_at: float | None = None) -> tuple:
    """x through the server as fast as possible (never degraded); with `enroll_at`, the last SOLO_S before it are
    enrolled once everything before it is answered. Returns (target, started, enrolled, metrics)."""
    frames = [x[i : i + 1600] for i in range(0, len(x), 1600)]
    async with await SeparationClient.connect(url(server)) as client:
        started = await client.start(RATE, text=None if example is not None else "speech", example=example,
                                     format="float32", pacing="as_fast_as_possible")
        outputs, enrolled, readings = [], None, []
        for index, frame in enumerate(frames):
            if enroll_at is not None and index * 1600 == round(enroll_at * RATE):
                enrolled = await client.enroll(SOLO_S)
            await client.send_audio(frame)
            outputs.append(await client.receive_audio())
            if index % 5 == 4:
                readings.append((await client.metrics())["voice"])
        await asyncio.sleep(0.3)  # the meter's last turn
        readings.append((await client.metrics())["voice"])
        await client.flush()
        outputs.append(await client.receive_audio())
    return stack(outputs)[0, started["latency_samples"] :], started, enrolled, readings


async def stream_command(server, *args: str) -> dict:
    """`samstream stream ... --server URL --json` in a subprocess (the server keeps serving meanwhile): its summary."""
    done = await asyncio.create_subprocess_exec(sys.executable, "-m", "samstream", "stream", *args, "--server",
                                                url(server), "--json", stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(done.communicate(), 120)
    assert done.returncode == 0, err.decode()[-3000:]
    return json.loads(out.decode().strip().splitlines()[-1])


async def test_three_seconds_of_the_live_stream_enroll_as_well_as_a_clip_file(default_model, tmp_path):
    """The target speaks alone for 3 s, then another voice joins. Enrolling those 3 s live ("enroll") separates the
    rest of the stream within 1 dB SI-SDR improvement of enrolling a clip file of the same voice (other sentences,
    `samstream stream --enroll FILE`)."""
    import soundfile

    from samstream.stream.voice_meter import VoiceMeter

    reader, man = real_speech(14.0, speaker="librivox"), real_speech(8.0, speaker="cards")
    x, kept = call(reader[4 * RATE :], man)
    soundfile.write(tmp_path / "call.wav", x, RATE, subtype="FLOAT")
    soundfile.write(tmp_path / "reader.wav", reader[: 3 * RATE], RATE, subtype="FLOAT")  # other sentences of theirs
    meter = VoiceMeter(RATE)
    server = SeparationServer(default_model, ServerConfig(port=0), model_name="tiny", realtime_budget_s=math.inf,
                              quality_monitor=meter)
    await server.start()
    try:
        live, started, enrolled, readings = await run_stream(server, x, enroll_at=SOLO_S)
        summary = await stream_command(server, str(tmp_path / "call.wav"), "--enroll", str(tmp_path / "reader.wav"),
                                       "-o", str(tmp_path / "from_file"))
    finally:
        await server.shutdown()
        meter.close()
    from_file = soundfile.read(summary["target"], dtype="float32")[0]
    assert len(from_file) == len(x) and summary["degraded_s"] == {"fewer_steps": 0.0, "pass_through": 0.0}
    rest = slice(round((SOLO_S + 0.5) * RATE), len(x))
    mixture_sdr = si_sdr(x[rest], kept[rest])
    improvement_live = si_sdr(live[rest], kept[rest]) - mixture_sdr
    improvement_file = si_sdr(from_file[rest], kept[rest]) - mixture_sdr
    print(f"SI-SDR improvement on the rest of the stream: live 3 s {improvement_live:.2f} dB, clip file "
          f"{improvement_file:.2f} dB (branch {enrolled['understood']['branch']})")
    assert abs(improvement_live - improvement_file) < 1.0, (improvement_live, improvement_file)
    # Both are served by the same part of the model: the voice picker, or, without its weights, the general network.
    assert enrolled["understood"]["branch"] != "expert"
    assert started["understood"]["branch"] == "expert" and (enrolled["from_s"], enrolled["to_s"]) == (0.0, SOLO_S)
    # The voice meter: no reading before the enrollment, readings of the reader's voice after it.
    voice = [r for r in readings if r is not None]
    assert voice and all(r["enrolled_s"] == SOLO_S and "error" not in r for r in voice), readings
    assert readings[0] is None and all(-1 <= r["input"] <= 1 for r in voice if r["input"] is not None)
