"""Mask floors: the share of its input a mask keeps at least, so that where a network cannot find the target it
returns (part of) the mixture instead of a confidently wrong silence (docs/model_card.md, "Never confidently wrong").

A floor is one share for every frequency, or one per band of FLOOR_BAND_EDGES_HZ (below 500 Hz, 500-1500,
1500-4000, above 4000 Hz): a class a network finds in some bands and not in others (applause, door, bell) keeps more
of its input where it cannot. Both general separators (model/embedded.py, model/masknet.py) take them per stream.

The same shares weigh a network's mask in a blend of general networks (model/composite.py, `Blend`): one weight
for every frequency, or one per band where the networks are best at different frequencies.
"""

from __future__ import annotations

import functools

import torch

FLOOR_BAND_EDGES_HZ = (500.0, 1500.0, 4000.0)
Floor = float | tuple[float, ...]


def check_share(value: float, name: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return float(value)


def check_floor(value, name: str) -> Floor:
    """A mask floor: a share in [0, 1], or a sequence of one share per band (FLOOR_BAND_EDGES_HZ)."""
    if isinstance(value, (list, tuple)):
        if len(value) != len(FLOOR_BAND_EDGES_HZ) + 1:
            raise ValueError(f"{name} needs one share per band ({len(FLOOR_BAND_EDGES_HZ) + 1}: edges "
                             f"{', '.join(f'{edge:g}' for edge in FLOOR_BAND_EDGES_HZ)} Hz), got {len(value)}")
        return tuple(check_share(share, f"{name} (band {band})") for band, share in enumerate(value))
    return check_share(value, name)


def lowest_share(floor: Floor) -> float:
    """The share of its input a floor keeps at least, at every frequency."""
    return min(floor) if isinstance(floor, tuple) else floor


@functools.lru_cache(maxsize=256)
def floor_per_bin(floor: Floor, bins: int, sample_rate: int, n_fft: int) -> torch.Tensor:
    """A floor as the share kept in each STFT bin [bins] (made once per floor: the stream path asks every hop)."""
    if isinstance(floor, tuple):
        hz = torch.arange(bins) * (sample_rate / n_fft)
        return torch.tensor(floor)[torch.bucketize(hz, torch.tensor(FLOOR_BAND_EDGES_HZ), right=True)]
    return torch.full((bins,), float(floor))
