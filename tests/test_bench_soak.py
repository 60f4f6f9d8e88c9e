"""`samstream bench soak --json`, briefly: live streams with clients coming, going and vanishing against a real
`samstream serve`; the report's memory samples, exact accounting (client and server agree on every sample of
every session) and latency per minute. The long runs are in docs/streaming.md."""

from __future__ import annotations

import json
import subprocess
import sys


def test_a_short_soak_accounts_for_every_sample():
    done = subprocess.run([sys.executable, "-m", "samstream", "bench", "soak", "--minutes", "0.4", "--streams", "3",
                           "--model", "random", "--session-s", "3", "6", "--abrupt-every", "2", "--sample-s", "1",
                           "--warmup-s", "5", "--json"], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["accounting_exact"] and result["accounting_problems"] == [] and result["lost_samples"] == 0
    assert result["sessions"] >= 6 and 0 < result["abrupt"] < result["sessions"]  # clients came, went, vanished
    assert result["audio_s"] > 20 and len(result["rss_mb"]) >= 15 and result["rss_mb_first"] > 0
    assert result["by_minute"][0]["p95_ms"] >= result["latency_ms"]  # nothing comes back before L
