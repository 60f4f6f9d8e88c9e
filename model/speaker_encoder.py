"""The voice picker's speaker embedding: the GE2E speaker encoder whose weights ship in PyPI's resemblyzer 0.1.4.

resemblyzer (Apache-2.0 code and weights) cannot be imported on Python 3.11: it imports webrtcvad (a source
build that needs `pkg_resources`, gone from setuptools >= 81) and librosa. So this module is a loader of our own
that reads only the wheel's `resemblyzer/pretrained.pt`: it finds the file with `importlib.util.find_spec`,
which locates the package without executing it, checks the file's SHA-256 against `WEIGHTS_SHA256` and reads
it with `torch.load(weights_only=True)`. install.sh installs the wheel with `pip install --no-deps`.

What the network sees, reproduced without librosa (tests/test_speaker_encoder.py compares every step with
the package's own output, made by tests/fixtures/make_speaker_encoder_reference.py):

- 16 kHz mono. Other rates go through the project's LL polyphase resampler (the package used librosa's
  resampler, so embeddings of resampled audio differ from its by a little).
- A power (not log) mel spectrogram as librosa >= 0.10 computes it with `melspectrogram`'s defaults: n_fft 400
  (25 ms), hop 160 (10 ms), periodic Hann window, frames centred on hop multiples with zero padding (the
  "constant" pad mode of librosa >= 0.10), |STFT|^2, 40 Slaney-scale mel bands with Slaney area normalisation.
- Partial utterances of 160 frames (1.6 s), 1.3 per second, the last kept when at least 75 % of it is audio;
  each goes through a 3-layer LSTM (40 -> 256), the last layer's final hidden state through Linear(256, 256),
  ReLU and L2 normalisation; the utterance embedding is the L2-normalised mean of the partial embeddings.
- Before that, the package's preprocessing raises (never lowers) the level to -30 dBFS RMS and cuts long
  silences with webrtcvad. webrtcvad is unavailable here, so `trim_long_silences` is an energy-based stand-in
  (30 ms windows against the utterance's loud windows, smoothed and dilated like the package's VAD flags): it
  drops pauses in clean speech, but unlike a VAD it keeps steady noise and non-speech sounds. It is optional
  (`trim=False`), and the only step that does not match the package.

`embed_recent` is the streaming meter's call: the embedding of the last 1.6 s, as the offline partial covering
those samples would be computed. Gate it on level first: the -30 dBFS lift turns silence into loud noise.
"""

from __future__ import annotations

import functools
import importlib.util
import io
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samstream.model.errors import AudioInputError, ModelLoadError
from samstream.model.pinned_file import read_pinned
from samstream.model.polyphase import polyphase_resample

PINNED_VERSION = "0.1.4"  # resemblyzer, installed by install.sh with --no-deps
WEIGHTS_SHA256 = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"  # resemblyzer/pretrained.pt

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 40
HIDDEN = 256
EMBEDDING = 256
LAYERS = 3
PARTIAL_FRAMES = 160  # 1.6 s
PARTIAL_SAMPLES = PARTIAL_FRAMES * HOP
PARTIAL_RATE = 1.3  # partials per second
MIN_COVERAGE = 0.75
TARGET_DBFS = -30.0


def slaney_mel_filters(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] triangles on the Slaney mel scale (linear below 1 kHz, logarithmic above),
    each scaled to unit area ("slaney" normalisation), from 0 Hz to Nyquist."""

    def hz_to_mel(hz):
        hz = np.asarray(hz, dtype=np.float64)
        log_region = hz >= 1000.0
        return np.where(log_region, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) * 27.0 / np.log(6.4),
                        hz * 3.0 / 200.0)

    def mel_to_hz(mel):
        mel = np.asarray(mel, dtype=np.float64)
        return np.where(mel >= 15.0, 1000.0 * np.exp((mel - 15.0) * np.log(6.4) / 27.0), mel * 200.0 / 3.0)

    bins_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2))
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bins_hz - lower) / (centre - lower)
    falling = (upper - bins_hz) / (upper - centre)
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    return (triangles * (2.0 / (upper - lower))).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _front_end_tables() -> tuple[torch.Tensor, torch.Tensor]:
    # Made outside inference mode so that a training process can use them after an inference call.
    with torch.inference_mode(False):
        window = torch.hann_window(N_FFT, periodic=True, dtype=torch.float64).float()
        return window, torch.from_numpy(slaney_mel_filters()).T.contiguous()


def mel_spectrogram(wav: np.ndarray | torch.Tensor, center: bool = True) -> torch.Tensor:
    """[..., S] 16 kHz float -> [..., frames, 40] power mel spectrogram (float32, on the input's device).
    center=True: frame i is centred on sample 160 i, zero padded at both ends (S // 160 + 1 frames);
    center=False: frame i covers samples 160 i .. 160 i + 400."""
    x = torch.as_tensor(wav, dtype=torch.float32)
    if center:
        x = F.pad(x, (N_FFT // 2, N_FFT // 2))
    window, filters = _front_end_tables()
    frames = x.unfold(-1, N_FFT, HOP) * window.to(x.device)
    spectra = torch.fft.rfft(frames, dim=-1)
    power = spectra.real.square() + spectra.imag.square()
    return power @ filters.to(x.device)


def normalize_volume(wav: np.ndarray, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    """Raise the RMS level to `target_dbfs` (never lower it), as the package's preprocessing does."""
    wav = np.asarray(wav, dtype=np.float32)
    rms = float(np.sqrt(np.mean(np.square(wav.astype(np.float64)))))
    if rms == 0.0:
        return wav
    change_db = target_dbfs - 20.0 * np.log10(rms)
    return wav if change_db <= 0 else (wav * np.float32(10.0 ** (change_db / 20.0))).astype(np.float32)


def trim_long_silences(wav: np.ndarray, window_ms: int = 30, relative_db: float = 35.0,
                       floor_dbfs: float = -65.0, smoothing: int = 8, keep_around: int = 6) -> np.ndarray:
    """Energy-based stand-in for the package's webrtcvad trimming (16 kHz input): keep 30 ms windows within
    `relative_db` of the utterance's loud windows (95th percentile) and above `floor_dbfs`, smooth the flags
    over `smoothing` windows, keep `keep_around` windows either side of what is kept, drop the rest. Like the
    package, the tail that does not fill a window is dropped. Pauses go; steady noise stays."""
    wav = np.asarray(wav, dtype=np.float32)
    window = SAMPLE_RATE * window_ms // 1000
    count = len(wav) // window
    if count == 0:
        return wav
    frames = wav[: count * window].reshape(count, window).astype(np.float64)
    level_db = 10.0 * np.log10(np.mean(np.square(frames), axis=1) + 1e-20)
    loud = level_db > max(np.percentile(level_db, 95) - relative_db, floor_dbfs)
    smoothed = np.convolve(loud.astype(np.float64), np.ones(smoothing) / smoothing, mode="same") > 0.5
    kept = np.convolve(smoothed.astype(np.float64), np.ones(2 * keep_around + 1), mode="same") > 0.5
    if not kept.any():
        return wav
    return wav[: count * window][np.repeat(kept, window)]


def preprocess_wav(wav: np.ndarray, sample_rate: int = SAMPLE_RATE, normalize: bool = True,
                   trim: bool = True) -> np.ndarray:
    """Any-rate mono float audio -> the 16 kHz float32 signal the encoder is meant to see."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1 or wav.size == 0:
        raise AudioInputError(f"the speaker encoder takes one non-empty mono signal, got shape {wav.shape}")
    if sample_rate != SAMPLE_RATE:
        wav = polyphase_resample(wav, sample_rate, SAMPLE_RATE)
    if normalize:
        wav = normalize_volume(wav)
    if trim:
        wav = trim_long_silences(wav)
    return wav


def partial_starts(n_samples: int, rate: float = PARTIAL_RATE, min_coverage: float = MIN_COVERAGE) -> list[int]:
    """First mel frames of the partial utterances of an n-sample signal (each PARTIAL_FRAMES long; they may run
    past the end, which is zero padded). The package's slicing: one every round(16000 / rate / 160) frames,
    as long as the partial starts within the signal's frames; the last one only when at least
    `min_coverage` of it is signal, unless it is the only one."""
    if not 0 < min_coverage <= 1:
        raise ValueError(f"min_coverage must lie in (0, 1], got {min_coverage}")
    step = int(np.round(SAMPLE_RATE / rate / HOP))
    if not 0 < step <= PARTIAL_FRAMES:
        raise ValueError(f"rate {rate} gives a step of {step} frames; it must be 1..{PARTIAL_FRAMES}")
    frames = int(np.ceil((n_samples + 1) / HOP))
    starts = list(range(0, max(1, frames - PARTIAL_FRAMES + step + 1), step))
    if len(starts) > 1 and (n_samples - starts[-1] * HOP) / PARTIAL_SAMPLES < min_coverage:
        starts.pop()
    return starts


class SpeakerEncoder(nn.Module):
    """GE2E speaker encoder: [B, 160, 40] mel partials -> [B, 256] L2-normalised (non-negative) embeddings.
    The embed_* methods take 16 kHz audio by default and return numpy; embeddings compare with `similarity`."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, HIDDEN, LAYERS, batch_first=True)
        self.linear = nn.Linear(HIDDEN, EMBEDDING)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        raw = F.relu(self.linear(hidden[-1]))
        return raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @property
    def device(self) -> torch.device:
        return self.linear.weight.device

    def _partial_embeddings(self, wavs: Sequence[np.ndarray], rate: float, min_coverage: float
                            ) -> list[np.ndarray]:
        """16 kHz signals -> per signal, its partials' embeddings [n, 256]; all partials in one LSTM batch.
        Zero padding to a common length leaves every partial's frames as they are alone (frames are centred
        and the signal is zero padded anyway)."""
        plans = [partial_starts(len(w), rate, min_coverage) for w in wavs]
        length = max(max(len(w), (starts[-1] + PARTIAL_FRAMES) * HOP) for w, starts in zip(wavs, plans))
        batch = np.zeros((len(wavs), length), np.float32)
        for row, w in zip(batch, wavs):
            row[: len(w)] = w
        with torch.no_grad():
            mels = mel_spectrogram(torch.from_numpy(batch).to(self.device))
            partials = torch.stack([mels[i, s : s + PARTIAL_FRAMES] for i, starts in enumerate(plans)
                                    for s in starts])
            embeddings = self(partials).cpu().numpy()
        return np.split(embeddings, np.cumsum([len(s) for s in plans])[:-1])

    def embed_partials(self, wav: np.ndarray, sample_rate: int = SAMPLE_RATE, *, normalize: bool = True,
                       trim: bool = False, rate: float = PARTIAL_RATE, min_coverage: float = MIN_COVERAGE
                       ) -> tuple[np.ndarray, np.ndarray]:
        """(partial embeddings [n, 256], their first samples [n] in the 16 kHz signal the encoder saw): how the
        embedding moves along a recording. Not trimmed by default, so that the sample positions hold."""
        wav = preprocess_wav(wav, sample_rate, normalize, trim)
        starts = np.asarray(partial_starts(len(wav), rate, min_coverage)) * HOP
        return self._partial_embeddings([wav], rate, min_coverage)[0], starts

    def embed_batch(self, wavs: Sequence[np.ndarray] | np.ndarray, sample_rate: int = SAMPLE_RATE, *,
                    normalize: bool = True, trim: bool = True, rate: float = PARTIAL_RATE,
                    min_coverage: float = MIN_COVERAGE) -> np.ndarray:
        """Utterance embeddings [B, 256] of B signals (any lengths, or a [B, S] array), in one forward pass:
        for data loaders and enrollment sets."""
        prepared = [preprocess_wav(w, sample_rate, normalize, trim) for w in wavs]
        if not prepared:
            return np.zeros((0, EMBEDDING), np.float32)
        means = np.stack([p.mean(axis=0) for p in self._partial_embeddings(prepared, rate, min_coverage)])
        return (means / np.linalg.norm(means, axis=1, keepdims=True)).astype(np.float32)

    def embed_utterance(self, wav: np.ndarray, sample_rate: int = SAMPLE_RATE, *, normalize: bool = True,
                        trim: bool = True, rate: float = PARTIAL_RATE, min_coverage: float = MIN_COVERAGE
                        ) -> np.ndarray:
        """[256] embedding of one utterance: the L2-normalised mean of its partial embeddings."""
        return self.embed_batch([wav], sample_rate, normalize=normalize, trim=trim, rate=rate,
                                min_coverage=min_coverage)[0]

    def embed_recent(self, history: np.ndarray, sample_rate: int = SAMPLE_RATE, normalize: bool = True
                     ) -> np.ndarray:
        """[256] embedding of the last 1.6 s of a stream's history (zero padded when shorter): the offline
        partial over those samples, whose frames also reach 200 samples back and 40 past the end (zeros)."""
        history = np.asarray(history, dtype=np.float32)
        if history.ndim != 1:
            raise AudioInputError(f"the speaker encoder takes one mono signal, got shape {history.shape}")
        context = PARTIAL_SAMPLES + N_FFT // 2
        if sample_rate != SAMPLE_RATE:  # a tail with margin for the resampler's start-up (keep 16 kHz to skip this)
            tail = int(np.ceil((context + SAMPLE_RATE // 10) * sample_rate / SAMPLE_RATE))
            history = polyphase_resample(history[-tail:], sample_rate, SAMPLE_RATE)
        recent = history[-context:]
        if normalize and recent.size:
            recent = normalize_volume(recent)
        segment = np.zeros((PARTIAL_FRAMES - 1) * HOP + N_FFT, np.float32)  # what 160 uncentred frames cover
        segment[context - len(recent) : context] = recent
        with torch.no_grad():
            mels = mel_spectrogram(torch.from_numpy(segment).to(self.device), center=False)
            return self(mels[None, :PARTIAL_FRAMES]).cpu().numpy()[0]


def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Cosine similarity along the last axis (broadcasting: [n, 256] against [256] gives [n])."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    cosine = np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return float(cosine) if np.ndim(cosine) == 0 else cosine


def weights_path() -> Path:
    """resemblyzer's pretrained.pt, located without importing the package (importing it fails on 3.11)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("the speaker encoder needs the weights inside the resemblyzer wheel: run "
                             f"`bash install.sh` (or pip install --no-deps resemblyzer=={PINNED_VERSION})")
    return Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The encoder's tensors (lstm.*, linear.*) from a checked pretrained.pt; the GE2E loss's similarity
    weight and bias and the optimizer state are left out."""
    data = read_pinned(path, WEIGHTS_SHA256, "the speaker encoder's weights",
                       f"pip install --no-deps resemblyzer=={PINNED_VERSION}")
    checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)  # the bytes checked
    return {k: v for k, v in checkpoint["model_state"].items() if k.startswith(("lstm.", "linear."))}


@functools.lru_cache(maxsize=None)
def load_speaker_encoder(device: str = "cpu") -> SpeakerEncoder:
    """The pretrained encoder, frozen and in eval mode; loaded on first use and shared (do not modify it)."""
    encoder = SpeakerEncoder()
    encoder.load_state_dict(read_weights(weights_path()))
    return encoder.eval().requires_grad_(False).to(device)
