"""The browser driver's measurements and its checks (the browsers themselves run in test_browser_e2e.py and
test_bench_e2e.py)."""

from __future__ import annotations

import numpy as np
import pytest

from samstream.clients.cli import bench_browser
from samstream.clients.cli.bench_browser import best_lag, round_trip_delays, unavailable

RATE = 48000


def test_best_lag_finds_a_delay_to_the_sample():
    signal = np.random.default_rng(0).standard_normal(RATE).astype(np.float32)
    delayed = np.concatenate([np.zeros(1234, np.float32), signal])
    assert best_lag(delayed, signal[:RATE // 4], 5000) == 1234


def test_round_trip_delays_follow_a_delay_that_moves():
    """What a page hears: its input delayed by 12000 samples, then by 12480 once its jitter buffer grew."""
    sent = (0.1 * np.random.default_rng(1).standard_normal(4 * RATE)).astype(np.float32)
    heard = np.concatenate([np.zeros(12000, np.float32), sent])[: len(sent)]
    heard[2 * RATE :] = np.concatenate([np.zeros(480, np.float32), heard])[2 * RATE : len(sent)]
    heard += 0.001 * np.random.default_rng(2).standard_normal(len(heard)).astype(np.float32)  # codec noise
    delays = round_trip_delays(sent, heard, RATE)
    assert len(delays) == 12  # quarter seconds from the first second on
    assert list(delays[:4]) == [12000] * 4 and list(delays[4:]) == [12480] * 8


def test_unavailable_says_what_to_install(monkeypatch):
    monkeypatch.setattr(bench_browser, "installed", lambda module: False)
    assert unavailable("chromium") == "playwright is not installed: run bash install.sh test"
    assert unavailable("firefox") == "marionette-driver is not installed: run bash install.sh test"
    with pytest.raises(ValueError, match="unknown browser"):
        unavailable("lynx")
