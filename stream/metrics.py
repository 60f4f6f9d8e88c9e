"""Per-session streaming metrics, updated by the session and the batcher, reported to clients."""

from __future__ import annotations

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

    @property
    def rtf(self) -> float:
        """Real-time factor: compute time per second of audio received."""
        return self.compute_s / self.audio_in_s if self.audio_in_s else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "degraded_s": {str(k): v for k, v in self.degraded_s.items()}, "rtf": self.rtf}
