"""`samstream separate` and the offline API on the parity checkpoint (random weights: the output is noise,
what matters here is the plumbing: rates, lengths, prompts, errors)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from samstream.model.errors import AudioInputError, PromptError
from samstream.model.separator import SAMAudioSeparator


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "samstream.stream.cli", *args], capture_output=True, text=True,
                          timeout=300)


def tone(rate, seconds, channels=1):
    t = np.arange(int(rate * seconds)) / rate
    x = 0.3 * np.sin(2 * np.pi * 330 * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size)
    return np.stack([x * (0.5 + c / 2) for c in range(channels)], 1).astype(np.float32)


@pytest.mark.parametrize("rate,channels,fmt", [(16000, 2, "wav"), (44100, 1, "flac")])
def test_separate_with_span_writes_input_length_and_rate(tmp_path, parity_dir, rate, channels, fmt):
    source = tmp_path / f"in.{fmt}"
    sf.write(source, tone(rate, 1.7, channels), rate)
    result = run_cli("separate", str(source), "--span", "+:0.2-0.6", "--span=-:1.0-1.2", "-o", str(tmp_path / "out"),
                     "--model", str(parity_dir), "--steps", "2", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    for name in ("target", "residual"):
        audio, out_rate = sf.read(summary[name])
        assert out_rate == rate and audio.shape == (int(rate * 1.7),)
        assert np.isfinite(audio).all() and np.abs(audio).max() > 0


def test_text_prompt_without_text_encoder_is_a_clear_error(tmp_path, parity_dir):
    source = tmp_path / "in.wav"
    sf.write(source, tone(16000, 1.0), 16000)
    result = run_cli("separate", str(source), "--prompt", "dog barking", "-o", str(tmp_path / "out"),
                     "--model", str(parity_dir))
    assert result.returncode == 2
    assert "text prompts need the checkpoint's text encoder" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_span_syntax_is_rejected(tmp_path, parity_dir):
    result = run_cli("separate", "x.wav", "--span", "3-4", "-o", str(tmp_path), "--model", str(parity_dir))
    assert result.returncode == 2 and "must look like +:3.2-4.0" in result.stderr


def test_undecodable_file(tmp_path, parity_dir):
    source = tmp_path / "in.wav"
    source.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    result = run_cli("separate", str(source), "--span", "+:0-1", "-o", str(tmp_path / "out"), "--model", str(parity_dir))
    assert result.returncode == 2 and "cannot decode" in result.stderr


@pytest.fixture(scope="module")
def separator(parity_model):
    return SAMAudioSeparator(parity_model)


def test_offline_api_batch_and_seed(separator):
    a, b = tone(16000, 1.0)[:, 0], tone(16000, 0.6)[:, 0]
    first, second = separator.separate_batch([a, b], 16000, [None, None], [[("+", 0.1, 0.4)], []])
    assert first.target.shape == a.shape and second.target.shape == b.shape
    again = separator.separate(a, 16000, spans=[("+", 0.1, 0.4)])
    other_seed = separator.separate(a, 16000, spans=[("+", 0.1, 0.4)], seed=1)
    assert not np.allclose(again.target, other_seed.target)


@pytest.mark.parametrize("audio,rate,message", [
    (np.zeros(0, np.float32), 16000, "empty"),
    (np.zeros(10, np.float32), 16000, "too short"),
    (np.zeros(16000, np.float32), 4000, "unsupported sample rate"),
    (np.zeros((16000, 2), np.float32), 16000, "channels first"),
    (np.zeros((2, 2, 100), np.float32), 16000, "must be \\[samples\\]"),
    (np.full(16000, np.nan, np.float32), 16000, "NaN"),
])
def test_bad_audio_is_a_clear_error(separator, audio, rate, message):
    with pytest.raises(AudioInputError, match=message):
        separator.separate(audio, rate, spans=[("+", 0, 0.5)])


def test_bad_spans_are_clear_errors(separator):
    with pytest.raises(PromptError, match="sign must be"):
        separator.separate(tone(16000, 1.0)[:, 0], 16000, spans=[("*", 0, 0.5)])
    with pytest.raises(PromptError, match="start < end"):
        separator.separate(tone(16000, 1.0)[:, 0], 16000, spans=[("+", 0.5, 0.2)])
