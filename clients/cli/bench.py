"""`samstream bench TARGET [--json]`: speed and memory figures, one module per target.

Benchmarks print human-readable figures and, with --json, one JSON object as the last stdout line.
Ratios that matter are measured side by side in one run, since these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import importlib

# target -> (module, help); each module defines add_arguments(parser) and run(args) -> int
TARGETS: dict[str, tuple[str, str]] = {
    "model": ("samstream.clients.cli.bench_model", "SAM Audio DiT/codec time per second of audio"),
    "stream": ("samstream.clients.cli.bench_stream", "streaming engine: RTF, latency, exactness, capacity, memory"),
    "window": ("samstream.clients.cli.bench_window", "sliding-window streaming vs whole-file separation (SNR)"),
    "embedded": ("samstream.clients.cli.bench_embedded", "embedded model: real-time factor of its stream step"),
    "e2e": ("samstream.clients.cli.bench_e2e", "end-to-end latency: WebSocket, WebRTC, browser; stream capacity"),
    "fuzz": ("samstream.clients.cli.bench_fuzz", "malformed input of every kind against a server: nothing breaks"),
    "soak": ("samstream.clients.cli.bench_soak", "N live streams for M minutes: memory, accounting, latency"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="target", required=True, metavar="TARGET")
    for name, (module_name, help_text) in TARGETS.items():
        module = importlib.import_module(module_name)
        target_parser = sub.add_parser(name, help=help_text, description=help_text)
        target_parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
        module.add_arguments(target_parser)
        target_parser.set_defaults(_bench=module.run)


def run(args: argparse.Namespace) -> int:
    return args._bench(args)
