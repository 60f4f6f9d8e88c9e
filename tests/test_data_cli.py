"""`samstream data ...`: sub-commands parse, --json prints one JSON object last, user errors are clear."""

import argparse
import json

import pytest

from samstream.model.errors import UserFacingError
from samstream.model.training import cli_data
from samstream.model.training.toy_cache import make_toy_cache


def _parse(argv):
    parser = argparse.ArgumentParser()
    cli_data.add_arguments(parser)
    return parser.parse_args(argv)


def test_subcommands_parse():
    assert _parse(["fetch", "--no-tools"]).no_tools
    assert _parse(["render", "--minutes", "2", "--only", "tts"]).only == ["tts"]
    assert _parse(["render"]).variety == "v1" and _parse(["render", "--variety", "v2"]).variety == "v2"
    args = _parse(["build-eval", "out", "--n-per-class", "3", "--in-distribution"])
    assert (args.n_per_class, args.in_distribution, args.voice_pairs) == (3, True, 30)


def test_index_json_is_the_last_line(tmp_path, capsys):
    cache = make_toy_cache(tmp_path / "cache")
    assert cli_data.run(_parse(["index", "--cache", str(cache), "--workers", "1", "--json"])) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(last)
    assert summary["entries"] > 40 and "woman speaking" in summary["classes"]


def test_missing_index_is_a_user_facing_error(tmp_path):
    with pytest.raises(UserFacingError, match="samstream data"):
        cli_data.run(_parse(["build-eval", str(tmp_path / "out"), "--cache", str(tmp_path / "empty")]))


def test_pack_and_unpack_print_json_last(tmp_path, capsys):
    import torch

    from samstream.model.training.index import build_index
    from samstream.model.class_prompts import all_train_prompts
    from samstream.model.training.train import embed_prompts

    class FakeEncoder:
        def encode(self, texts):
            return torch.zeros(len(texts), 1, 384), torch.ones(len(texts), 1, dtype=torch.bool)

    assert _parse(["pack", "out", "--data", "somewhere"]).cache.name == "somewhere"  # --data = --cache
    cache = make_toy_cache(tmp_path / "cache")
    build_index(cache, workers=1)
    embed_prompts(all_train_prompts(), cache / "prompt_vectors.safetensors", encoder=FakeEncoder())  # no MiniLM
    pack = tmp_path / "pack"
    argv = ["pack", str(pack), "--cache", str(cache), "--max-mb", "0.53", "--clip-seconds", "0.5", "--json"]
    assert cli_data.run(_parse(argv)) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["bytes"] <= 0.53 * 2**20 and "dog bark" in summary["classes"]
    with pytest.raises(UserFacingError, match="--force"):
        cli_data.run(_parse(argv))
    assert cli_data.run(_parse(["unpack", str(pack), str(tmp_path / "wav"), "--workers", "1", "--json"])) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["entries"] == summary["clips"]
