"""scripts/gpu_burst.sh end to end on the CPU, the way the GPU machine runs it: a pack, the import shim
instead of an installed samstream, unpack, a short time-boxed training run, the run folder handed back
as 15 MiB tar pieces."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import torch

from samstream.model.training.index import build_index
from samstream.model.training.pack import PackConfig, build_pack
from samstream.model.training.toy_cache import make_toy_cache, write_toy_rir_bank

REPO = Path(__file__).resolve().parents[1]
TINY = '{"dim": 32, "n_heads": 2, "n_layers": 2, "context_chunks": 4}'


class FakeEncoder:  # the pack's prompt vectors without loading MiniLM
    def encode(self, texts):
        return torch.zeros(len(texts), 1, 384), torch.ones(len(texts), 1, dtype=torch.bool)


def test_cpu_dry_run_trains_and_hands_the_run_back(tmp_path):
    cache = make_toy_cache(tmp_path / "cache")
    build_index(cache, workers=1)
    write_toy_rir_bank(cache)
    pack = tmp_path / "pack"
    build_pack(cache, pack, PackConfig(max_mb=0.55, clip_seconds=1.0), encoder=FakeEncoder(), progress=False)
    out, run = tmp_path / "out", tmp_path / "runs" / "burst"
    env = {**os.environ, "TMPDIR": str(tmp_path), "BURST_DATA": str(tmp_path / "data")}
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_burst.sh"), str(pack), str(run), "--device", "cpu",
         "--max-minutes", "0.04", "--batch-size", "2", "--seconds", "0.5", "--workers", "1", "--out", str(out),
         "--python", sys.executable, "--", "--model-config", TINY],
        env=env, capture_output=True, text=True, timeout=170, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"samstream from {tmp_path / 'samstream-site'}" in result.stdout  # the shim, as on the GPU machine
    summary = json.loads((out / "burst_summary.json").read_text())
    assert summary["status"] == 0 and summary["config"]["workers"] == 1
    parts = sorted(out.glob("run.tar.part-*"))
    assert parts
    joined = tmp_path / "run.tar"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(joined) as tar:
        names = set(tar.getnames())
    for name in ("checkpoint.pt", "model.safetensors", "config.json", "prompt_vectors.safetensors"):
        assert f"burst/{name}" in names
