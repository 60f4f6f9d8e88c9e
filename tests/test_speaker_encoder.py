"""The GE2E speaker encoder against the real resemblyzer 0.1.4 (fixture made by
fixtures/make_speaker_encoder_reference.py in a throwaway venv), and same vs different speaker on espeak-ng voices."""

from __future__ import annotations

import io
import itertools
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from samstream.model import speaker_encoder as se
from samstream.model.errors import AudioInputError, ModelLoadError

REFERENCE = Path(__file__).parent / "fixtures" / "speaker_encoder_reference.npz"


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as data:
        return dict(data)


@pytest.fixture(scope="module")
def wav(reference) -> np.ndarray:
    return reference["pcm"].astype(np.float32) / 32768


@pytest.fixture(scope="module")
def encoder():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield se.load_speaker_encoder()
    torch.set_num_threads(threads)


def assert_same_embedding(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape
    assert np.all(se.similarity(ours, theirs) > 0.9999)
    assert np.abs(ours - theirs).max() < 1e-4


def test_mel_front_end_equals_librosa(reference, wav):
    mel = se.mel_spectrogram(wav).numpy()
    assert mel.shape == reference["mel"].shape  # odd length: len // 160 + 1 centred frames
    np.testing.assert_allclose(mel, reference["mel"], rtol=1e-4, atol=1e-6 * reference["mel"].max())


def test_partial_slicing_equals_package(reference):
    for n in reference["slice_lengths"]:
        assert se.partial_starts(int(n)) == reference[f"slices_{n}"].tolist(), n


def test_embeddings_equal_package(reference, wav, encoder):
    partials, starts = encoder.embed_partials(wav, normalize=False)
    assert starts.tolist() == reference["raw_starts"].tolist()
    assert_same_embedding(partials, reference["raw_partials"])
    assert_same_embedding(encoder.embed_utterance(wav, normalize=False, trim=False), reference["raw_embedding"])
    # The package's preprocessing without its webrtcvad trimming: -30 dBFS, raised only.
    assert_same_embedding(encoder.embed_partials(wav)[0], reference["norm_partials"])
    assert_same_embedding(encoder.embed_utterance(wav, trim=False), reference["norm_embedding"])


def test_perturbed_weights_do_not_match(reference, wav):
    weights = se.read_weights(se.weights_path())
    weights["lstm.weight_hh_l1"] = weights["lstm.weight_hh_l1"] * 1.01
    perturbed = se.SpeakerEncoder()
    perturbed.load_state_dict(weights)
    with pytest.raises(AssertionError):
        assert_same_embedding(perturbed.embed_utterance(wav, trim=False), reference["norm_embedding"])


def test_energy_trim_stands_in_for_vad(reference, wav, encoder):
    normalized = se.normalize_volume(wav)
    trimmed = se.trim_long_silences(normalized)
    # The 0.6 s pause shrinks as it does with webrtcvad (which kept 61440 samples of 75749).
    assert len(wav) - len(trimmed) > 0.4 * se.SAMPLE_RATE
    assert abs(len(trimmed) - int(reference["preprocessed_length"])) < 0.3 * se.SAMPLE_RATE
    assert len(se.preprocess_wav(wav, trim=False)) == len(wav)
    assert se.similarity(encoder.embed_utterance(wav), reference["preprocessed_embedding"]) > 0.99


def test_volume_is_raised_only():
    rng = np.random.default_rng(0)
    quiet = (0.001 * rng.standard_normal(16000)).astype(np.float32)
    raised = se.normalize_volume(quiet)
    assert 20 * np.log10(np.sqrt(np.mean(raised.astype(np.float64) ** 2))) == pytest.approx(-30, abs=1e-3)
    loud = 100 * quiet  # -20 dBFS: left as it is
    assert np.array_equal(se.normalize_volume(loud), loud)
    assert np.array_equal(se.normalize_volume(np.zeros(100, np.float32)), np.zeros(100, np.float32))


def test_batch_and_recent_window_agree_with_single_calls(wav, encoder):
    short, long = wav[: 2 * se.SAMPLE_RATE], wav
    batch = encoder.embed_batch([short, long], trim=False)
    np.testing.assert_allclose(batch[0], encoder.embed_utterance(short, trim=False), atol=1e-6)
    np.testing.assert_allclose(batch[1], encoder.embed_utterance(long, trim=False), atol=1e-6)
    # The streaming meter's window is the offline partial over the last 1.6 s.
    history = wav[: len(wav) // se.HOP * se.HOP]
    first_frame = (len(history) - se.PARTIAL_SAMPLES) // se.HOP
    mels = se.mel_spectrogram(np.pad(history, (0, se.N_FFT)))[first_frame : first_frame + se.PARTIAL_FRAMES]
    with torch.no_grad():
        offline = encoder(mels[None]).numpy()[0]
    np.testing.assert_allclose(encoder.embed_recent(history, normalize=False), offline, atol=1e-6)
    assert encoder.embed_recent(wav[:1000]).shape == (se.EMBEDDING,)


def test_bad_input_and_bad_weights(tmp_path, encoder):
    with pytest.raises(AudioInputError):
        encoder.embed_utterance(np.zeros((2, 16000), np.float32))
    with pytest.raises(AudioInputError):
        encoder.embed_utterance(np.zeros(0, np.float32))
    corrupt = tmp_path / "pretrained.pt"
    corrupt.write_bytes(b"not the weights")
    with pytest.raises(ModelLoadError, match="SHA-256"):
        se.read_weights(corrupt)


def speak(text: str, voice: str) -> tuple[np.ndarray, int]:
    out = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text], capture_output=True, check=True).stdout
    return soundfile.read(io.BytesIO(out), dtype="float32")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_same_voice_is_closer_than_other_gender(encoder):
    sentences = ["The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background."]
    voices = {"en-us+m3": "male", "en-gb+m2": "male", "en-us+f4": "female", "en-us+Annie": "female"}
    clips = [speak(s, v) for v in voices for s in sentences]
    rate = clips[0][1]  # espeak-ng's 22.05 kHz goes through the polyphase resampler
    embeddings = encoder.embed_batch([c for c, _ in clips], rate).reshape(len(voices), len(sentences), -1)
    for (i, a), (j, b) in itertools.combinations(enumerate(voices), 2):
        if voices[a] == voices[b]:
            continue
        across = se.similarity(embeddings[i][:, None], embeddings[j][None]).max()
        for k, voice in ((i, a), (j, b)):
            same = se.similarity(embeddings[k][0], embeddings[k][1])
            assert same > across + 0.05, (voice, a, b, same, across)
