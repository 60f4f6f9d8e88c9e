"""Causal level normalisation: the default model hears every stream at one working level, whatever its gain.

DeepFilterNet3 takes a quiet mixture (around -50 dBFS) for noise and wipes it, and a network trained on one
range of levels drifts outside it; a microphone can be anywhere from -60 to 0 dBFS. So the default model scales
its input towards `TARGET_DBFS` with a slow causal gain, and divides its output by the same per-sample gain,
delayed as the output is: a constant gain cancels exactly, and a slowly moving one (at most `MAX_SLEW_DB` per
hop) nearly so, because the separators mix only neighbouring samples.

The gain follows the stream's active level: a level tracker in dB that rises fast (a new louder source) and
falls slowly (pauses do not pump the gain), ignoring hops more than `GATE_DB` below it (silence).
Offline runs use the same object over the whole file, so they equal streaming.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TARGET_DBFS = -30.0  # RMS working level: DeepFilterNet3 does best around -30..-35 (measured), training mixtures sit at -33..-14
MAX_GAIN_DB = 60.0  # -90 dBFS and quieter is treated as silence, not lifted further
MIN_GAIN_DB = -40.0
MAX_SLEW_DB = 3.0  # per hop: a jump of the gain spreads over several hops
ATTACK = 0.5  # share of a rise taken per hop
RELEASE = 0.01  # share of a fall taken per hop (~3 s time constant at 32 ms hops)
GATE_DB = 30.0  # hops this far below the tracked level are silence: they leave it alone
SILENCE_DBFS = -100.0


@dataclass
class LevelState:
    level_db: float | None = None  # tracked active level; None until the first non-silent hop
    gain_db: float = 0.0  # gain applied at the end of the last hop


class LevelNormalizer:
    """`normalize(state, hop) -> (scaled hop, per-sample gains)`; the caller divides its output by the gains,
    delayed like the output."""

    def __init__(self, target_dbfs: float = TARGET_DBFS) -> None:
        self.target_dbfs = target_dbfs

    def normalize(self, state: LevelState, hop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        power = float(np.mean(np.square(hop, dtype=np.float64))) if len(hop) else 0.0
        hop_db = 10 * np.log10(power) if power > 0 else SILENCE_DBFS
        first = state.level_db is None and hop_db > SILENCE_DBFS
        if hop_db > SILENCE_DBFS:
            if first:
                state.level_db = hop_db
            elif hop_db > state.level_db:
                state.level_db += ATTACK * (hop_db - state.level_db)
            elif hop_db > state.level_db - GATE_DB:
                state.level_db += RELEASE * (hop_db - state.level_db)
        wanted = 0.0 if state.level_db is None else self.target_dbfs - state.level_db
        wanted = min(MAX_GAIN_DB, max(MIN_GAIN_DB, wanted))
        # The first sound sets the gain at once (only digital silence came before); later changes slew.
        step = wanted - state.gain_db if first else float(np.clip(wanted - state.gain_db, -MAX_SLEW_DB, MAX_SLEW_DB))
        new_db = state.gain_db + step
        # a linear ramp in dB from the last hop's gain to the new one: no step inside a frame
        start_db = new_db if first else state.gain_db
        ramp_db = start_db + (new_db - start_db) * (np.arange(1, len(hop) + 1) / len(hop))
        state.gain_db = new_db
        gains = np.power(10.0, ramp_db / 20).astype(np.float32)
        return (hop * gains).astype(np.float32), gains
