"""Fixed-step flow-matching ODE solvers (t=0 noise -> t=1 data, the network predicts dx/dt).

The official default is torchdiffeq's fixed-grid midpoint with step 2/32: 16 steps, 32 network
evaluations at t = k/32. The loop below reproduces it bit for bit (the grid is k*dt in float32, the
midpoint at t_k + dt/2), so torchdiffeq is not needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (t scalar tensor, x) -> dx/dt

METHODS = ("midpoint", "euler")


@dataclass(frozen=True)
class SolverConfig:
    method: str = "midpoint"
    steps: int = 16

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown ODE method {self.method!r}; use one of {METHODS}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")

    @property
    def evaluations(self) -> int:
        return self.steps * (2 if self.method == "midpoint" else 1)

    def evaluation_times(self) -> list[torch.Tensor]:
        """Every time at which the network is evaluated, in call order (for precomputing per-time caches)."""
        dt = torch.tensor(1.0 / self.steps, dtype=torch.float32)
        times = []
        for k in range(self.steps):
            t = k * dt
            times.append(t)
            if self.method == "midpoint":
                times.append(t + dt / 2)
        return times


def solve(
    velocity: Velocity,
    x0: torch.Tensor,
    config: SolverConfig = SolverConfig(),
    on_step: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Integrate from x0 at t=0 to t=1; `on_step(k, x)` sees the state after each step (progress, traces)."""
    dt = torch.tensor(1.0 / config.steps, dtype=torch.float32)
    x = x0
    for k in range(config.steps):
        t = k * dt
        slope = velocity(t, x)
        if config.method == "midpoint":
            slope = velocity(t + dt / 2, x + slope * (dt / 2))
        x = x + dt * slope
        if on_step is not None:
            on_step(k, x)
    return x
