"""`samstream judge` (clients/cli/judge.py) on the extras' small Judge: the scores the model gives, from files.
In process through the CLI's `main` (tests/test_separate_cli.py runs the `samstream` entry point itself)."""

import json

import numpy as np
import soundfile as sf
import torch

from fixtures.side_models import sam_directory_with_side_models, side_model_directory
from samstream.clients.cli import main


def test_judge_prints_the_models_scores(tmp_path, capsys):
    from samstream.model.audio import read_audio, resample, to_mono
    from samstream.model.components import load_judge

    directory = side_model_directory("judge", tmp_path / "judge")
    rng = np.random.default_rng(0)
    mixture = (0.3 * rng.standard_normal(12000)).astype(np.float32)
    sf.write(tmp_path / "mix.wav", mixture, 8000)
    sf.write(tmp_path / "est.wav", 0.5 * mixture, 8000)
    assert main(["judge", str(tmp_path / "mix.wav"), str(tmp_path / "est.wav"), "--prompt", "dog barking",
                 "--model", str(directory), "--json"]) == 0
    out, err = capsys.readouterr()
    scores = json.loads(out.strip().splitlines()[-1])
    assert "SAM Audio Judge: 0.4 M parameters" in err
    assert [line.split()[0] for line in out.splitlines()[:4]] == ["overall", "recall", "precision", "faithfulness"]
    judge = load_judge(directory)[0]
    waves = [resample(to_mono(read_audio(tmp_path / name)[0]), 8000, 200) for name in ("mix.wav", "est.wav")]
    with torch.inference_mode():
        expected = judge.score(waves[:1], waves[1:], ["dog barking"])[0]
    for name, value in expected.as_dict().items():
        assert abs(scores[name] - value) < 1e-5


def test_judge_is_found_in_a_sam_directory_or_named_missing(tmp_path, parity_dir, capsys):
    sf.write(tmp_path / "mix.wav", np.zeros(8000, np.float32), 8000)
    with_judge = sam_directory_with_side_models(parity_dir, tmp_path / "sam", span_predictor=False)
    assert main(["judge", str(tmp_path / "mix.wav"), str(tmp_path / "mix.wav"), "--prompt", "music",
                 "--model", str(with_judge)]) == 0
    assert str(with_judge / "sam-audio-judge") in capsys.readouterr().err
    without = sam_directory_with_side_models(parity_dir, tmp_path / "bare", span_predictor=False, judge=False)
    assert main(["judge", str(tmp_path / "mix.wav"), str(tmp_path / "mix.wav"), "--prompt", "music",
                 "--model", str(without)]) == 2
    error = capsys.readouterr().err
    assert "SAM Audio Judge is needed but was not found" in error and "--model DIR" in error
