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
    return subprocess.run([sys.executable, "-m", "samstream", *args], capture_output=True, text=True,
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


# -- visual-mask prompts ----------------------------------------------------------------------------------

def clip_frames(count=12, height=24, width=20, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def object_mask(height=24, width=20):
    mask = np.zeros((height, width), bool)
    mask[4:16, 3:11] = True
    return mask


def test_masked_video_changes_the_separation_and_matches_a_direct_computation(vision_model):
    import torch
    import torch.nn.functional as F
    from torch.testing import assert_close

    from samstream.model.video import MaskedVideo

    separator = SAMAudioSeparator(vision_model)
    rng = np.random.default_rng(1)
    waves = [torch.from_numpy(rng.standard_normal(n).astype(np.float32) * 0.3) for n in (200, 150)]  # 200 Hz model
    frames, mask = clip_frames(), object_mask()
    inputs = separator.prepare(waves, [None, None], None, [MaskedVideo(frames, mask), None])
    # Direct: frame j of 25 latent frames = round(linspace(0, 11, 25))[j]; keep the object; resize; PE-Core.
    index = np.round(np.linspace(0, 11, 25)).astype(int)  # no .5 ties for these sizes
    masked = torch.from_numpy(frames[index] * object_mask()[None, :, :, None])
    resized = F.interpolate(masked.permute(0, 3, 1, 2).float(), size=(16, 16), mode="bicubic", align_corners=False,
                            antialias=True).clamp(0, 255).round()
    with torch.no_grad():
        direct = vision_model.vision_encoder.model.encode_image((resized / 255 - 0.5) / 0.5, normalize=True)
    assert inputs.video_features.shape == (2, 48, 25)
    assert_close(inputs.video_features[0].T, direct, rtol=1e-5, atol=1e-6)
    assert torch.equal(inputs.video_features[1], torch.zeros(48, 25))  # no video: what the reference feeds
    noise = torch.randn(inputs.audio_features.shape, generator=torch.Generator().manual_seed(0))
    with_video = separator.sample(inputs, noise=noise)
    without = separator.sample(separator.prepare(waves, [None, None], None), noise=noise)
    assert (with_video[0] - without[0]).abs().max() > 1e-2
    assert_close(with_video[1], without[1])  # the other row is untouched

    audio = tone(16000, 1.0)[:, 0]
    plain = separator.separate(audio, 16000, spans=[("+", 0.1, 0.4)])
    visual = separator.separate(audio, 16000, spans=[("+", 0.1, 0.4)], masked_video=MaskedVideo(frames, mask))
    premasked = separator.separate(audio, 16000, spans=[("+", 0.1, 0.4)], masked_video=frames * mask[None, :, :, None])
    assert np.abs(plain.target - visual.target).max() > 1e-3
    assert np.array_equal(visual.target, premasked.target)  # bare frames are taken as already masked


def test_video_prompt_without_vision_tower_is_a_clear_error(separator):
    with pytest.raises(PromptError, match="no vision encoder.*vision_encoder.model.*Use a checkpoint that includes"):
        separator.separate(tone(16000, 1.0)[:, 0], 16000, masked_video=clip_frames())


def test_bad_visual_prompts_are_clear_errors(vision_model):
    from samstream.model.video import MaskedVideo

    separator = SAMAudioSeparator(vision_model)
    audio = tone(16000, 1.0)[:, 0]
    with pytest.raises(PromptError, match="must be \\[frames, height, width, 3\\]"):
        separator.separate(audio, 16000, masked_video=clip_frames()[..., 0])
    with pytest.raises(PromptError, match="mask is 10x24 .* but the frames are 20x24"):
        separator.separate(audio, 16000, masked_video=MaskedVideo(clip_frames(), np.ones((24, 10), bool)))
    with pytest.raises(PromptError, match="2 audio clips but 1 masked videos"):
        separator.separate_batch([audio, audio], 16000, [None, None], masked_videos=[clip_frames()])


def write_clip(directory, seconds=1.0):
    import av

    sf.write(directory / "in.wav", tone(16000, seconds), 16000)
    with av.open(str(directory / "clip.mkv"), "w") as container:
        stream = container.add_stream("ffv1", rate=30)
        stream.width, stream.height, stream.pix_fmt = 20, 24, "yuv444p"
        for frame in clip_frames(int(30 * seconds)):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    np.save(directory / "mask.npy", object_mask())


def test_separate_with_video_and_mask(tmp_path, vision_model_dir, parity_dir):
    write_clip(tmp_path)
    args = ["separate", str(tmp_path / "in.wav"), "--video", str(tmp_path / "clip.mkv"), "--mask",
            str(tmp_path / "mask.npy"), "-o", str(tmp_path / "out"), "--steps", "2", "--json"]
    result = run_cli(*args, "--model", str(vision_model_dir))
    assert result.returncode == 0, result.stderr
    target, rate = sf.read(json.loads(result.stdout.strip().splitlines()[-1])["target"])
    assert rate == 16000 and target.shape == (16000,) and np.isfinite(target).all()
    refused = run_cli(*args, "--model", str(parity_dir))
    assert refused.returncode == 2 and "has no vision encoder" in refused.stderr and "Traceback" not in refused.stderr


# -- SAM Audio's side models: span prediction and best-of-K reranking --------------------------------------------

def test_predict_spans_and_candidates_on_the_extras_models(tmp_path, parity_dir):
    """The parity model with a tiny T5, the extras' PE-A-Frame and Judge beside it, as users lay them out."""
    from fixtures.side_models import sam_directory_with_side_models

    model = sam_directory_with_side_models(parity_dir, tmp_path / "sam")
    source = tmp_path / "in.wav"
    sf.write(source, tone(16000, 1.3), 16000)
    result = run_cli("separate", str(source), "--prompt", "music", "--predict-spans", "--candidates", "2",
                     "-o", str(tmp_path / "out"), "--model", str(model), "--steps", "2", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["predicted_spans"] and all(sign == "+" for sign, _, _ in summary["predicted_spans"])
    assert len(summary["candidate_scores"]) == 2 and "kept candidate" in result.stdout
    # Each side model is reported once, with its memory, when it loads.
    assert result.stderr.count("PE-A-Frame span predictor: 0.3 M parameters") == 1
    assert result.stderr.count("SAM Audio Judge: 0.4 M parameters") == 1


def test_missing_side_model_is_a_clear_error(tmp_path, parity_dir, capsys):
    from fixtures.side_models import sam_directory_with_side_models
    from samstream.clients.cli import main

    model = sam_directory_with_side_models(parity_dir, tmp_path / "sam", span_predictor=False, judge=False)
    source = tmp_path / "in.wav"
    sf.write(source, tone(16000, 1.0), 16000)
    assert main(["separate", str(source), "--prompt", "music", "--predict-spans", "-o", str(tmp_path / "out"),
                 "--model", str(model)]) == 2
    error = capsys.readouterr().err
    assert "PE-A-Frame span predictor is needed but was not found" in error
    assert str(model / "pe-a-frame-large") in error and "--span-predictor DIR" in error
    assert main(["separate", str(source), "--prompt", "music", "--candidates", "2", "-o", str(tmp_path / "out"),
                 "--model", "tiny"]) == 2
    assert "need a SAM Audio checkpoint" in capsys.readouterr().err


def test_the_default_model_says_when_it_does_not_separate_a_class(tmp_path, capsys):
    """A class whose calibrated floor is 1 (the network scored below the mixture on it) comes back as its input,
    and `separate` says so; a class it separates gets no note. Real chimes and rings."""
    from fixtures.real_audio import real_sounds
    from fixtures.signals import si_sdr
    from samstream.clients.cli import main
    from samstream.model.composite import FLOORS_FILE, load_floors
    from samstream.model.embedded import WEIGHTS_DIR

    floors, _ = load_floors(WEIGHTS_DIR / FLOORS_FILE)
    passed = next(cls for cls, floor in sorted(floors.items()) if floor == 1.0)
    separated = next(cls for cls, floor in sorted(floors.items()) if floor == 0.0)
    sounds = real_sounds(3.0)
    source = tmp_path / "in.wav"
    sf.write(source, sounds, 16000, subtype="FLOAT")
    for cls in (passed, separated):
        assert main(["separate", str(source), "--prompt", cls, "-o", str(tmp_path / cls), "--json"]) == 0
        captured = capsys.readouterr()
        summary = json.loads(captured.out.strip().splitlines()[-1])
        assert summary["understood"]["class"] == cls and summary["understood"]["branch"] == "general"
        assert ("does not separate" in captured.err) == (cls == passed)
    target, _ = sf.read(tmp_path / passed / "target.wav", dtype="float32")
    assert si_sdr(target, sounds) > 20.0  # no speech here: the input passes (the expert's estimate of it is slight)
