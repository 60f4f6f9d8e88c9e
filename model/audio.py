"""Audio file I/O, validation and offline resampling, with errors that say what to do."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from samstream.model.errors import AudioInputError

MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 192000
MAX_CHANNELS = 8


def check_sample_rate(sample_rate: int) -> int:
    if not isinstance(sample_rate, (int, np.integer)) or not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioInputError(
            f"unsupported sample rate {sample_rate!r}: use an integer rate between {MIN_SAMPLE_RATE} and "
            f"{MAX_SAMPLE_RATE} Hz (resample the file first, e.g. with sox or ffmpeg)"
        )
    return int(sample_rate)


def to_mono(audio: np.ndarray | torch.Tensor) -> torch.Tensor:
    """[S] or [C,S] (channels first, C <= 8) -> float32 [S]; SAM Audio is mono (it averages channels)."""
    if isinstance(audio, np.ndarray) and not audio.flags.writeable:
        audio = audio.copy()  # torch cannot share read-only memory (e.g. an immutable prompt example)
    wav = torch.as_tensor(audio)
    if not wav.is_floating_point():
        raise AudioInputError(f"audio must be floating point samples in [-1, 1], got dtype {wav.dtype}")
    wav = wav.float()
    if wav.dim() == 2:
        if wav.shape[0] > MAX_CHANNELS:
            raise AudioInputError(
                f"audio of shape {tuple(wav.shape)}: expected channels first ([channels, samples]) with at most "
                f"{MAX_CHANNELS} channels; transpose a [samples, channels] array"
            )
        wav = wav.mean(0)
    elif wav.dim() != 1:
        raise AudioInputError(f"audio must be [samples] or [channels, samples], got shape {tuple(wav.shape)}")
    if wav.numel() == 0:
        raise AudioInputError("audio is empty (0 samples)")
    if not torch.isfinite(wav).all():
        raise AudioInputError("audio contains NaN or infinite samples")
    return wav


def resample(wav: torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    """Windowed-sinc resampling (torchaudio's default, as the official processor uses) along the last axis."""
    if from_rate == to_rate:
        return wav
    import torchaudio.functional

    return torchaudio.functional.resample(wav, from_rate, to_rate)


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode a file to float32 [channels, samples] and its rate (WAV/FLAC/OGG via soundfile, else PyAV)."""
    path = Path(path)
    if path.is_dir():
        raise AudioInputError(f"{path} is a directory, not an audio file: give a file (wav, flac, ogg, mp3, ...)")
    if not path.is_file():
        raise AudioInputError(f"audio file {path} does not exist")
    import soundfile

    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        audio = data.T
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        audio, rate = _read_with_av(path)
    if audio.shape[1] == 0:
        raise AudioInputError(f"{path} holds no audio samples")
    return np.ascontiguousarray(audio), int(rate)


def _read_with_av(path: Path) -> tuple[np.ndarray, int]:
    import av

    try:
        with av.open(str(path)) as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise AudioInputError(f"{path} has no audio stream")
            chunks = [_planar(frame) for frame in container.decode(stream)]
            rate = stream.rate
    except AudioInputError:
        raise
    except Exception as error:  # PyAV raises many decoder-specific errors
        raise AudioInputError(f"cannot decode {path} ({type(error).__name__}: {error}); is it an audio file?") from None
    if not chunks:
        raise AudioInputError(f"{path} holds no decodable audio")
    audio = np.concatenate(chunks, axis=1)
    if audio.dtype.kind in "iu":
        audio = audio / float(np.iinfo(audio.dtype).max)
    return audio.astype(np.float32), rate


def _planar(frame) -> np.ndarray:
    """PyAV frame -> [channels, samples] (packed formats interleave channels in one row)."""
    data = frame.to_ndarray()
    if frame.format.is_planar:
        return data
    return data.reshape(-1, len(frame.layout.channels)).T


def write_audio(path: str | os.PathLike, audio: np.ndarray | torch.Tensor, sample_rate: int) -> None:
    import soundfile

    data = np.asarray(torch.as_tensor(audio).detach().cpu().float())
    soundfile.write(str(path), data.T if data.ndim == 2 else data, sample_rate, subtype="FLOAT")
