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
