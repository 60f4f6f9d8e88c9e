"""`samstream bench fuzz --json`: a bounded slice (the full run sends >= 10,000 messages; docs/streaming.md) of
malformed input of every kind against a real `samstream serve`: no crash, no hang, every error code documented in
docs/protocol.md, the reference client's output bit-identical to its undisturbed run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from samstream.clients.cli.bench_fuzz import KINDS
from samstream.stream.server.ws import ERROR_CODES

DOCS = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"


def test_the_error_codes_are_the_documented_ones():
    table = DOCS.read_text().split("## Error codes (stable)", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.M))
    assert documented == ERROR_CODES


def test_a_slice_of_the_fuzz_breaks_nothing():
    # A hang is a request never answered: 60 s tells one apart from a server starved of CPU on a loaded 2-core
    # machine (replies seen 20 s late there, with two training runs beside the suite), which the default 20 s does not.
    done = subprocess.run([sys.executable, "-m", "samstream", "bench", "fuzz", "--messages", "1200", "--workers", "4",
                           "--reply-timeout", "60", "--json"], capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ok"] and result["messages"] >= 1200
    assert set(result["by_kind"]) == set(KINDS)
    assert result["crashes"] == result["hangs"] == result["internal_errors"] == result["problem_count"] == 0
    assert not result["undocumented_codes"] and set(result["error_codes"]) <= ERROR_CODES
    assert result["reference_bit_identical_after"] and result["reference_max_abs_diff_during"] <= 1e-4
    assert result["server_closes"].get("slow_reader_cut", 0) >= 1 and result["server_closes"].get("not_http:closed")
