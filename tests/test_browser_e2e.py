"""The browser client end to end, in Chromium and in Firefox: headless, over WebRTC, inside a private
network namespace (tests/fixtures/browser_scenario.py does the run). Chromium (Playwright) sends its fake
microphone, which plays a WAV; Firefox (Marionette) sends the same WAV through the page's audio-file input.

Needs Debian's chromium and firefox-esr, PyPI's playwright and marionette-driver (bash install.sh test);
without them this test fails. Set SAMSTREAM_SCREENSHOT=docs/browser.png to keep Chromium's screenshot.

Robust to a loaded machine: the scenario runs at a raised priority (nice -10, as real-time audio would), the
engine may hold up to its backlog (2 s) in flight, and the audio checks leave out what scheduling alone
causes: half seconds in which the page heard nothing yet (its jitter buffer ran dry) or in which the
browser's jitter buffer moved (no single offset fits them), and quarter seconds whose round trip cannot be
measured (no clear match).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from fixtures.netns import python_isolated
from fixtures.signals import best_lag, si_sdr
from samstream.clients.cli.bench_browser import round_trip_delays, unavailable

SCENARIO = Path(__file__).parent / "fixtures" / "browser_scenario.py"
LATENCY = 4087  # the session latency at 48 kHz, as the answer reports it
OPUS_DELAY = 120  # per direction, "lowdelay" Opus (the browser's own encoder adds its own)
RATE = 48000
WINDOW = RATE // 2
IN_FLIGHT = 2.5 * RATE  # frames fed and not yet sent back: at most the session's backlog (2 s) and a few frames


@pytest.fixture(scope="module", params=["chromium", "firefox"])
def run(request, tmp_path_factory) -> tuple[Path, dict, dict[str, np.ndarray]]:
    browser = request.param
    assert unavailable(browser) is None, unavailable(browser)
    out = tmp_path_factory.mktemp(browser)
    done = python_isolated(str(SCENARIO), str(out), browser, timeout_s=300, nice=-10)
    assert done.returncode == 0, f"browser scenario failed:\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
    result = json.loads((out / "result.json").read_text())
    assert "shown" in result, f"the page did not start in {browser}: {json.dumps(result, indent=1)[:4000]}"
    with np.load(out / "audio.npz") as audio:
        return out, result, dict(audio)


def windows(signal: np.ndarray, width: int = WINDOW):
    return [(start, signal[start : start + width]) for start in range(0, len(signal) - width + 1, width)]


def test_page_streams_and_shows_live_metrics(run):
    out, result, _ = run
    assert result["answer"]["latency_samples"] == LATENCY and result["answer"]["sample_rate"] == RATE
    shown = result["shown"]
    assert shown["status"] == "live" and shown["error"] == ""
    assert shown["m-latency"] == f"{1000 * LATENCY / RATE:.0f} ms"
    assert float(shown["m-rtf"]) > 0 and shown["m-level"] == "full"
    assert shown["prompt-now"] == "prompt: this 0.5–1.5 s, voice example 2.0 s"  # "Enroll this voice" at the end
    # How the model took the prompt: the random-weight model does not say; the default model's answers are worded.
    assert result["answer"]["understood"] is None and shown["prompt-understood"] == ""
    speech, passed, voice, blend = result["understood_shown"]
    assert speech == {"text": 'heard as "man speaking" (similarity 0.93), served by the speech expert', "warning": False}
    assert passed["warning"] and passed["text"].startswith('not separated: the default model cannot separate "bubbles"')
    assert voice == {"text": "the enrolled voice, served by the voice picker", "warning": False}
    assert blend == {"text": 'heard as "dog bark" (similarity 0.90), served by a blend of 3 general networks',
                     "warning": False}
    assert shown["mix-label"] == "original (target + residual)"
    state = result["state"]
    assert state["errors"] == [] and not any(line.startswith(("error", "pageerror")) for line in result["console"])
    # Frames fed to the engine and frames sent back differ only by those in flight at that moment.
    assert 0 <= state["metrics"]["samples_in"] - state["metrics"]["samples_out"] <= IN_FLIGHT
    assert 0 <= result["server_in"] - result["server_out"] <= IN_FLIGHT and result["server_out"] > 3 * RATE
    assert result["mix_changes"]
    assert result["released"]  # stopping the page hung up: the server let the session go
    # Whose voice is enrolled (the page's own microphone, or the file it plays) and the live voice meter.
    source = "your voice" if result["browser"]["name"] == "chromium" else "a voice from input.wav"
    enrolled, heard_now, in_output = state["voiceShown"]
    assert enrolled.startswith(f"{source}, 2.0 s enrolled at 00:") and state["enrollment"]["seconds"] == 2.0
    voice = state["metrics"]["voice"]
    assert voice["enrolled_s"] == 2.0 and "error" not in voice
    for value, shown_value in ((voice["input"], heard_now), (voice["output"], in_output)):
        assert shown_value == ("quiet" if value is None else f"{value:.2f}")
    assert result["rate"] == RATE  # the page's AudioContext ran at 48 kHz: recordings need no resampling


def test_page_receives_the_offline_separation(run):
    """What the page hears, against the offline separation of the input the server received delayed by the
    reported latency L (the server's output clock); each half second is placed on that clock by
    cross-correlation (the network and the browser's jitter buffer add their own, varying, delay)."""
    _, result, audio = run
    offline = audio["offline_target"]
    # The server's output is that separation, L later (until the enrollment at the end changed the prompt).
    target = audio["server_target"][: result["prompt_changes"][0]]
    assert si_sdr(target[LATENCY:], offline[: len(target) - LATENCY]) > 30
    reference = np.concatenate([np.zeros(LATENCY, np.float32), offline])
    scores, offsets, silent = [], [], []
    for start, heard in windows(audio["target_out"]):
        silent.append(np.sqrt(np.mean(heard.astype(np.float64) ** 2)) < 1e-4)  # nothing had arrived yet
        at = best_lag(reference, heard, len(reference) - len(heard)) if not silent[-1] else 0
        scores.append(si_sdr(heard, reference[at : at + len(heard)]) if not silent[-1] else np.nan)
        offsets.append(at - start)
    print(f"\nSI-SDR per half second (dB): {np.round(scores, 1).tolist()}; offsets {offsets}")
    # A window in which the browser's jitter buffer stretched or squeezed time matches no single offset: only
    # windows that share their offset with every heard neighbour (the buffer held still around them) are judged.
    # (A window the buffer moved in may still take the offset of the neighbour on its unmoved side: seen under
    # load, offsets [61539, 61539, 61073, ...] with the second window at 0 dB.)
    def heard_neighbours(i):
        return [j for j in (i - 1, i + 1) if 0 <= j < len(scores) and not silent[j]]

    steady = [i for i in range(len(scores)) if not silent[i] and heard_neighbours(i) and all(
        abs(offsets[j] - offsets[i]) <= 2 for j in heard_neighbours(i))]
    assert len(steady) >= 3, f"too few steady half seconds to judge: offsets {offsets}"
    judged = np.array([scores[i] for i in steady])
    assert np.median(judged) >= 15
    assert np.mean(judged >= 15) >= 0.75


def test_browser_round_trip_latency(run):
    """With the slider at "original" the page hears its own input (target + residual) delayed by the
    whole round trip: find that delay per quarter second on the page's clock."""
    out, result, audio = run
    delays = round_trip_delays(audio["mixture_in"], audio["mixture_out"], RATE)
    # Only quarter seconds that clearly match the input at their delay (not one the page heard nothing in).
    width, search = RATE // 4, RATE
    heard, sent = audio["mixture_out"].astype(np.float64), audio["mixture_in"].astype(np.float64)
    clear = []
    for index, delay in enumerate(delays):
        start = search + index * width
        a, b = heard[start : start + width], sent[start - delay : start - delay + width]
        clear.append(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b) + 1e-12) > 0.8)
    assert sum(clear) >= 4, f"too few quarter seconds match their input: {delays.tolist()}"
    delays = delays[np.array(clear)]
    delays_ms = 1000 * delays / RATE
    figures = {"p50_ms": float(np.percentile(delays_ms, 50)), "p95_ms": float(np.percentile(delays_ms, 95)),
               "windows": len(delays), "engine_latency_ms": 1000 * LATENCY / RATE}
    (out / "latency.json").write_text(json.dumps(figures))
    print(f"\n{result['browser']['name']} round trip: {figures}")
    # The round trip holds at least the engine's latency and both Opus look-aheads.
    assert min(delays) >= LATENCY + 2 * OPUS_DELAY


def test_screenshot(run):
    out, result, _ = run
    png = (out / "browser.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20000
    keep = os.environ.get("SAMSTREAM_SCREENSHOT")
    if keep and result["browser"]["name"] == "chromium":
        shutil.copyfile(out / "browser.png", keep)
