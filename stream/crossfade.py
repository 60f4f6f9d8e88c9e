"""Equal-power crossfade between two signals over a fixed number of samples.

Used where the output switches from one source to another: a prompt change (old separation to
new), the engine's degradation levels (separation to pass-through and back), and by the regime
adapters for the seams between committed hops. Equal power (cos/sin) rather than linear gains
keeps the loudness steady when the two signals are uncorrelated, which is the usual case for two
different separations; the windows are computed once.
"""

from __future__ import annotations

import numpy as np


class Crossfader:
    """old * cos(θ) + new * sin(θ), θ rising from 0 to π/2 over `length` samples (cos² + sin² = 1)."""

    def __init__(self, length: int) -> None:
        if length < 1:
            raise ValueError(f"crossfade length must be at least 1 sample, got {length}")
        self.length = int(length)
        # Sample centres, so the fade is symmetric and neither end repeats a gain of exactly 0 or 1.
        theta = (np.arange(self.length) + 0.5) * (np.pi / 2 / self.length)
        self.fade_out = np.cos(theta).astype(np.float32)
        self.fade_in = np.sin(theta).astype(np.float32)

    def mix(self, old: np.ndarray, new: np.ndarray, start: int = 0) -> np.ndarray:
        """Crossfade samples [start, start + n) of the fade, n = old.shape[-1] (channels first, time last)."""
        n = old.shape[-1]
        if old.shape != new.shape or not 0 <= start <= self.length - n:
            raise ValueError(
                f"crossfade of shapes {old.shape} and {new.shape} at sample {start} does not fit a {self.length}-sample fade"
            )
        window = slice(start, start + n)
        return old * self.fade_out[window] + new * self.fade_in[window]
