"""Per-session streaming metrics, updated by the session and the batcher, reported to clients."""

from __future__ import annotations

import bisect
import math
import threading
from dataclasses import asdict, dataclass, field

# Degradation levels (declared, see batcher.py): 0 full steps, 1 fewer steps, 2 pass-through of the mixture.
FULL, FEWER_STEPS, PASS_THROUGH = 0, 1, 2


@dataclass
class SessionMetrics:
    latency_ms: float  # fixed algorithmic latency L of this session
    audio_in_s: float = 0.0  # client audio received
    audio_out_s: float = 0.0  # client audio returned (pre-roll and flushed tail included)
    compute_s: float = 0.0  # processor time spent on this session (its share of each batched step)
    queue_depth: int = 0  # hops waiting for compute
    level: int = FULL  # degradation level of the latest hop
    # Model-rate audio produced at each degraded level, in seconds.
    degraded_s: dict[int, float] = field(default_factory=lambda: {FEWER_STEPS: 0.0, PASS_THROUGH: 0.0})
    # The latest live Judge score of the output (stream/quality.py), when the server scores sessions.
    quality: dict | None = None
    # The latest live voice similarity of an enrolled voice to the input and the output (stream/voice_meter.py).
    voice: dict | None = None

    @property
    def rtf(self) -> float:
        """Real-time factor: compute time per second of audio received."""
        return self.compute_s / self.audio_in_s if self.audio_in_s else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "degraded_s": {str(k): v for k, v in self.degraded_s.items()}, "rtf": self.rtf}


# Seconds, for the latency breakdown of the serving path (hop wait, round compute, hand-offs, sending, loop lag).
TIMING_BUCKETS_S = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15,
                    0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, math.inf)


class Histogram:
    """Counts of observed durations per bucket (cumulative only when rendered): what /metrics exposes as a
    Prometheus histogram. Observed from the event loop and the worker thread alike, hence the lock."""

    def __init__(self, buckets: tuple[float, ...] = TIMING_BUCKETS_S) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        index = bisect.bisect_left(self.buckets, seconds)
        with self._lock:
            self.counts[min(index, len(self.counts) - 1)] += 1
            self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)
