"""`samstream bench e2e --json`: every leg (WebSocket latency and capacity, WebRTC with the Python client,
the browser client in Chromium and Firefox) against a real `samstream serve`, with tiny durations; and a
leg that cannot run says why. The bench runs its WebRTC and browser legs in a private network namespace of its
own (clients/cli/netns.py): no packet goes to this machine's interface addresses."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from samstream.clients import cli
from samstream.clients.cli import bench_browser, netns


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def positive(*values) -> bool:
    return all(isinstance(value, float) and math.isfinite(value) and value > 0 for value in values)


def test_every_leg_reports_its_latency():
    done = subprocess.run([sys.executable, "-m", "samstream", "bench", "e2e", "--model", "random",
                           "--seconds", "1.5", "--ramp-seconds", "1.2", "--max-streams", "2", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"bench e2e failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["model"] == "random" and result["legs"] == ["ws", "webrtc", "browser"]
    # WebSocket on this machine's loopback; WebRTC and the browsers in a namespace of the bench's own.
    assert result["network"] == "loopback" and result["isolated_network"] == f"private namespace ({netns.ADDRESS})"
    assert positive(result["latency_ms"], result["ws_first_sample_ms"], result["ws_latency_ms_p50"])
    assert result["ws_latency_ms_p50"] <= result["ws_latency_ms_p95"]
    assert result["max_realtime_ws_streams"] in (0, 1, 2)  # how many held depends on the machine's load
    assert [step["streams"] for step in result["ramp"]] in ([1], [1, 2])
    # WebRTC: the heard input lags by the engine's latency at 48 kHz plus both Opus look-aheads (2.5 ms each),
    # and each sample's latency holds that lag
    lag_ms = 1000 * result["webrtc_lag_samples"] / 48000
    assert 2 * 2.5 < lag_ms < 1000
    assert positive(result["webrtc_first_sample_ms"], result["webrtc_latency_ms_p50"])
    assert lag_ms < result["webrtc_latency_ms_p50"] <= result["webrtc_latency_ms_p95"]
    # The browsers: the first one listed gives the headline figures.
    assert result["browser"]["name"] == "chromium" and result["browser"]["version"]
    assert positive(result["browser_latency_ms_p50"])
    assert lag_ms < result["browser_latency_ms_p50"] <= result["browser_latency_ms_p95"]
    firefox = result["browsers"]["firefox"]
    assert firefox["version"] and firefox["input"] == "file"
    assert positive(firefox["latency_ms_p50"]) and lag_ms < firefox["latency_ms_p50"] <= firefox["latency_ms_p95"]


def test_a_leg_that_cannot_run_says_why(monkeypatch, capsys):
    why = "playwright is not installed: run bash install.sh test"
    monkeypatch.setattr(bench_browser, "unavailable", lambda browser: why)
    monkeypatch.setenv(netns.MARKER, netns.ADDRESS)  # as inside the namespace: the leg runs in this process
    assert cli.main(["bench", "e2e", "--model", "random", "--legs", "browser", "--browsers", "chromium",
                     "--json"]) == 0
    out = capsys.readouterr().out
    assert f"browser, chromium: skipped: {why}" in out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["browser"] == {"name": "chromium", "skipped": why}
    assert result["browsers"] == {"chromium": {"name": "chromium", "skipped": why}}
    assert "browser_latency_ms_p50" not in result and "ws_latency_ms_p50" not in result


def test_without_a_network_namespace_the_media_legs_say_why(monkeypatch, capsys):
    why = "making a private network namespace needs root (unshare --net)"
    monkeypatch.setattr(netns, "unavailable", lambda: why)
    monkeypatch.delenv(netns.MARKER, raising=False)
    assert cli.main(["bench", "e2e", "--model", "random", "--legs", "webrtc,browser", "--json"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["webrtc"] == {"skipped": why} and result["browser"] == {"name": "chromium", "skipped": why}
    assert f"webrtc, browser: skipped: {why}" in out


def test_unknown_legs_are_refused(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "e2e", "--legs", "ws,carrier-pigeon"])
    assert "choose from ws, webrtc, browser" in capsys.readouterr().err
