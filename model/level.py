"""Causal level normalisation: the default model hears every stream at one working level, whatever its gain.

DeepFilterNet3 takes a quiet mixture for noise and wipes it (at -50 dBFS RMS it passes nothing), and is 2-6 dB
worse on loud input (-10 dBFS) than around -30 dBFS; a microphone can sit anywhere from -60 to 0 dBFS. So the
default model scales its input to `TARGET_DBFS` and divides its output by the same per-sample gain, delayed as
the output is: a constant gain cancels exactly.

What the gain follows was chosen by measurement (docs/model_card.md): a gain that keeps moving while the
separators listen costs ~1.5 dB, and one set from the first hop alone is often wrong (a quiet onset, an
interferer); DeepFilterNet also remembers a loud start for seconds. So the first sound is scaled whole by a
provisional gain held `SETTLE_MARGIN_DB` below the wanted one; after `SETTLE_HOPS` sounding hops (~0.25 s) the gain
is set from the loudest hop heard so far, and afterwards moves only when the stream's level drifts more than
`DRIFT_DB` from where it was set (a talker moving to the microphone), by at most `SLEW_DB` per hop.
Offline runs use the same object over the whole file, so they equal streaming.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

TARGET_DBFS = -27.0  # working RMS level (DeepFilterNet3 does best around -25..-35 dBFS RMS, measured)
PEAK_TO_RMS_DB = 6.0  # the loudest hop of a few seconds sits about this far above the stream's RMS
SETTLE_HOPS = 8  # sounding hops heard before the gain is first set
SETTLE_MARGIN_DB = 12.0
HISTORY_HOPS = 300  # ~10 s of hop levels: the loudest of them stands for the stream's level
DRIFT_DB = 6.0  # the gain moves again only when the wanted gain is this far from the current one
SLEW_DB = 0.2  # per hop, once set
MAX_GAIN_DB = 60.0
MIN_GAIN_DB = -40.0
SILENCE_DBFS = -100.0  # a hop at or below this is digital silence: it does not count


@dataclass
class LevelState:
    gain_db: float = 0.0
    settled: bool = False
    levels: deque = field(default_factory=lambda: deque(maxlen=HISTORY_HOPS))  # dB of the sounding hops


class LevelNormalizer:
    """`normalize(state, hop) -> (scaled hop, per-sample gains)`; the caller divides its output by the gains,
    delayed like the output."""

    def __init__(self, target_dbfs: float = TARGET_DBFS) -> None:
        self.target_dbfs = target_dbfs

    def wanted_gain_db(self, state: LevelState) -> float:
        level = max(state.levels) - PEAK_TO_RMS_DB
        return min(MAX_GAIN_DB, max(MIN_GAIN_DB, self.target_dbfs - level))

    def normalize(self, state: LevelState, hop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        power = float(np.mean(np.square(hop, dtype=np.float64))) if len(hop) else 0.0
        hop_db = 10 * np.log10(power) if power > 0 else SILENCE_DBFS
        if hop_db > SILENCE_DBFS:
            state.levels.append(hop_db)
        start_db = state.gain_db
        if not state.settled and state.levels:
            # Provisional while settling, so that a quiet stream is not wiped meanwhile, but held back by
            # SETTLE_MARGIN_DB: the first hops often under-state the level, and DeepFilterNet remembers loud starts.
            state.settled = len(state.levels) >= SETTLE_HOPS
            state.gain_db = self.wanted_gain_db(state) - (0.0 if state.settled else SETTLE_MARGIN_DB)
            if len(state.levels) == 1:
                start_db = state.gain_db  # only silence came before: the first sound is scaled whole
        elif state.settled:
            drift = self.wanted_gain_db(state) - state.gain_db
            if abs(drift) > DRIFT_DB:
                state.gain_db += float(np.clip(drift, -SLEW_DB, SLEW_DB))
        # a linear ramp in dB from the last hop's gain to the new one: no step inside a frame
        ramp_db = start_db + (state.gain_db - start_db) * (np.arange(1, len(hop) + 1) / len(hop))
        gains = np.power(10.0, ramp_db / 20).astype(np.float32)
        return (hop * gains).astype(np.float32), gains
