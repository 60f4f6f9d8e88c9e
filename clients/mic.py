"""Microphone in, separated sound out: sounddevice capture -> a separation backend -> speakers and/or a file.

Two backends behind one small interface (`process(pcm) -> (target, residual)`, `finish() -> tail`):
  * `InProcessBackend`: a `StreamSession` in this process (the engine's synchronous path);
  * `ServerBackend`: a samstream server over the WebSocket protocol "samstream.v1".
Both return exactly one output sample per input sample, `latency_samples` late; `finish` returns the
last `latency_samples`, so a recording covers the whole input.

The loop is plain blocking I/O: read a block from the input stream, separate it, write it to the
output stream (and the recording). Capture and playback are separate streams (full-duplex streams
stall on some virtual devices). A run stops after `seconds` of input, counted in frames, or on Ctrl-C.

sounddevice is imported only here, lazily: it needs the PortAudio library (Debian: libportaudio2).
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Protocol, TextIO

import numpy as np

from samstream.clients import not_separated_note
from samstream.model.errors import UserFacingError


class AudioDeviceError(UserFacingError):
    """No usable audio device, an unknown device name, or PortAudio missing."""


class ServerError(UserFacingError):
    """The samstream server refused the stream or could not be reached."""


def import_sounddevice():
    try:
        import sounddevice
    except OSError as error:  # the PortAudio library is missing
        raise AudioDeviceError(f"cannot load PortAudio ({error}): install it (Debian/Ubuntu: apt-get install "
                               "libportaudio2)") from None
    return sounddevice


# ---------------------------------------------------------------------------------------- devices


def list_devices(sd=None) -> str:
    """A table of the audio devices, defaults marked (> input, < output)."""
    sd = sd or import_sounddevice()
    devices = sd.query_devices()
    default_in, default_out = sd.default.device
    lines = ["   #  in out  rate    name"]
    for index, device in enumerate(devices):
        mark = (">" if index == default_in else " ") + ("<" if index == default_out else " ")
        lines.append(f"{mark}{index:3d} {device['max_input_channels']:3d} {device['max_output_channels']:3d} "
                     f"{device['default_samplerate']:6.0f}  {device['name']}")
    if not len(devices):
        lines.append("  (no audio devices found)")
    return "\n".join(lines)


def resolve_device(sd, spec: str | int | None, kind: str) -> int:
    """A device index from an index, a (part of a) name, or None for the system default."""
    if isinstance(spec, str) and spec.strip().isdigit():
        spec = int(spec)
    try:
        info = sd.query_devices(spec, kind)
    except (ValueError, sd.PortAudioError) as error:
        raise AudioDeviceError(f"no {kind} device {spec!r} ({error}); `samstream mic --list-devices` lists them") from None
    return int(info["index"])


def check_devices(sd, options: "MicOptions") -> None:
    """Resolve the devices and check they take the stream's settings, before anything slow (a model load, a
    connection) happens: a missing microphone is said at once."""
    checks = [("input", options.input_device, sd.check_input_settings)]
    if options.play:
        checks.append(("output", options.output_device, sd.check_output_settings))
    for kind, spec, check in checks:
        device = resolve_device(sd, spec, kind)
        try:
            check(device=device, samplerate=options.sample_rate, channels=1, dtype="int16")
        except (ValueError, sd.PortAudioError) as error:
            raise AudioDeviceError(f"the {kind} device {device} cannot run at {options.sample_rate} Hz, mono, "
                                   f"16-bit ({error}); `samstream mic --list-devices` lists the devices") from None


# ---------------------------------------------------------------------------------------- backends


class Backend(Protocol):
    latency_samples: int
    understood: dict | None  # how the model took the prompt (docs/protocol.md)

    def process(self, pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def finish(self) -> tuple[np.ndarray, np.ndarray]: ...

    def metrics(self) -> dict: ...

    def close(self) -> None: ...


class InProcessBackend:
    def __init__(self, processor, sample_rate: int, prompt) -> None:
        from samstream.stream.session import StreamSession

        self.session = StreamSession(processor, sample_rate, prompt)
        self.latency_samples = self.session.latency_samples
        self.understood = self.session.understood()

    def process(self, pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.session.push(pcm)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        return self.session.flush()

    def metrics(self) -> dict:
        return self.session.metrics.as_dict()

    def close(self) -> None:
        pass


class ServerBackend:
    """One session on a samstream server: float32 frames out, (target, residual) frames back, in order."""

    def __init__(self, url: str, sample_rate: int, prompt: dict, token: str | None = None) -> None:
        from websockets.sync.client import connect

        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            self.ws = connect(url, additional_headers=headers, max_size=None,
                              open_timeout=10)
        except (OSError, TimeoutError) as error:
            raise ServerError(f"cannot connect to {url}: {error}") from None
        except Exception as error:  # websockets' handshake errors (wrong path, refused token, ...)
            raise ServerError(f"the server at {url} refused the connection: {error}") from None
        self.ws.send(json.dumps({"type": "start", "protocol": "samstream.v1", "format": "float32",
                                 "sample_rate": sample_rate, "outputs": "both", "pacing": "live", "prompt": prompt}))
        started = self._next_json()
        if started.get("type") != "started":
            raise ServerError(f"unexpected reply to start: {started}")
        self.latency_samples = int(started["latency_samples"])
        self.understood = started.get("understood")
        self._last_metrics: dict = {}

    def _next_json(self) -> dict:
        message = self.ws.recv()
        if isinstance(message, bytes):
            raise ServerError("the server sent audio where a control message was expected")
        message = json.loads(message)
        if message.get("type") == "error":
            raise ServerError(f"server error {message.get('code')}: {message.get('message')}")
        return message

    def _next_audio(self, samples: int) -> tuple[np.ndarray, np.ndarray]:
        while True:
            message = self.ws.recv()
            if isinstance(message, bytes):
                break
            message = json.loads(message)
            if message.get("type") == "error":
                raise ServerError(f"server error {message.get('code')}: {message.get('message')}")
            if message.get("type") == "metrics":
                self._last_metrics = message
        frames = np.frombuffer(message, dtype="<f4").reshape(-1, 2)
        if len(frames) != samples:
            raise ServerError(f"the server answered {len(frames)} samples for {samples}")
        return np.ascontiguousarray(frames[:, 0]), np.ascontiguousarray(frames[:, 1])

    def process(self, pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.ws.send(pcm.astype("<f4").tobytes())
        return self._next_audio(len(pcm))

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        self.ws.send(json.dumps({"type": "flush"}))
        tail = self._next_audio(self.latency_samples)
        end = self._next_json()
        self._last_metrics = end.get("metrics", self._last_metrics)
        return tail

    def metrics(self) -> dict:
        return self._last_metrics

    def close(self) -> None:
        self.ws.close()


# ---------------------------------------------------------------------------------------- the loop


HEAR = {"target": (1.0, 0.0), "residual": (0.0, 1.0), "mixture": (1.0, 1.0)}


def to_int16(pcm: np.ndarray) -> np.ndarray:
    return np.clip(np.round(pcm * 32768), -32768, 32767).astype(np.int16)


def level_db(pcm: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(pcm, dtype=np.float64)))) if len(pcm) else 0.0
    return 20 * math.log10(max(rms, 1e-5))


def meter_line(input_db: float, output_db: float, width: int = 24) -> str:
    def bar(db: float) -> str:
        filled = round(width * min(1.0, max(0.0, (db + 60) / 60)))
        return "#" * filled + "-" * (width - filled)

    return f"in [{bar(input_db)}] {input_db:6.1f} dB   out [{bar(output_db)}] {output_db:6.1f} dB"


@dataclass
class MicOptions:
    sample_rate: int = 48000
    block: int = 960  # frames per read (20 ms at 48 kHz)
    seconds: float | None = None  # stop after this much input; None: until Ctrl-C
    input_device: str | int | None = None
    output_device: str | int | None = None
    play: bool = True
    record: str | None = None  # a 2-channel float WAV: target, residual (the whole input, latency included)
    hear: str = "target"
    meter: bool = True
    meter_every_s: float = 0.1


@dataclass
class MicResult:
    samples_in: int
    samples_out: int
    latency_samples: int
    wall_s: float
    overflows: int  # input blocks PortAudio reported as overflowed (audio lost before we read it)
    metrics: dict


def run_mic(backend: Backend, options: MicOptions, sd=None, log: TextIO = sys.stderr) -> MicResult:
    sd = sd or import_sounddevice()
    import soundfile as sf

    if note := not_separated_note(backend.understood):
        log.write(note + "\n")
    gains = HEAR[options.hear]
    rate = options.sample_rate
    total = None if options.seconds is None else round(options.seconds * rate)
    samples_in = samples_out = overflows = 0
    started = time.monotonic()
    input_device = resolve_device(sd, options.input_device, "input")
    output_device = resolve_device(sd, options.output_device, "output") if options.play else None
    with ExitStack() as stack:
        try:
            # 16-bit samples both ways: what nearly every sound card moves natively (ALSA's float conversion
            # in front of a `file` plugin even dropped audio on the fake test card).
            source = stack.enter_context(sd.InputStream(device=input_device, samplerate=rate, channels=1,
                                                        dtype="int16", blocksize=options.block))
            sink = None
            if options.play:
                sink = stack.enter_context(sd.OutputStream(device=output_device, samplerate=rate, channels=1,
                                                           dtype="int16", blocksize=options.block))
        except sd.PortAudioError as error:
            raise AudioDeviceError(f"cannot open the audio device at {rate} Hz: {error}") from None
        recording = None
        if options.record:
            recording = stack.enter_context(sf.SoundFile(options.record, "w", rate, 2, subtype="FLOAT"))

        def emit(target: np.ndarray, residual: np.ndarray) -> np.ndarray:
            nonlocal samples_out
            heard = (gains[0] * target + gains[1] * residual).astype(np.float32)
            if sink is not None:
                sink.write(to_int16(heard)[:, None])
            if recording is not None:
                recording.write(np.stack([target, residual], axis=1))
            samples_out += len(target)
            return heard

        next_meter = 0
        try:
            while total is None or samples_in < total:
                count = options.block if total is None else min(options.block, total - samples_in)
                data, overflowed = source.read(count)
                overflows += bool(overflowed)
                pcm = data[:, 0].astype(np.float32) / 32768
                heard = emit(*backend.process(pcm))
                samples_in += count
                if options.meter and samples_in >= next_meter:
                    log.write("\r" + meter_line(level_db(pcm), level_db(heard)))
                    log.flush()
                    next_meter = samples_in + round(options.meter_every_s * rate)
        except KeyboardInterrupt:
            pass
        emit(*backend.finish())
        if options.meter:
            log.write("\n")
    return MicResult(samples_in, samples_out, backend.latency_samples, time.monotonic() - started, overflows,
                     backend.metrics())
