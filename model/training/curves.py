"""`samstream curves RUN [RUN ...] --eval DIR`: held-out learning curves of training runs, per CPU time.

Every snapshot a run kept (`samstream train --snapshot-every-cpu-minutes N` writes RUN/snapshots/cpuMMMMMmin-*.safetensors)
is evaluated on the evaluation directory (the 17 required classes, `--per-class` items each, the network alone or,
with `--composite`, inside the default model), the result cached beside the snapshot, and the curves drawn as an
SVG (dB of SI-SDR improvement against CPU minutes of training: the measure of candidates trained on a shared
machine) and printed as a table. Training-time only.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from samstream.model.training.evaluate import add_threads_argument

SNAPSHOT = re.compile(r"cpu(\d+)min-step(\d+)\.safetensors$")
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def snapshots(run: Path) -> list[tuple[int, int, Path]]:
    """(cpu minutes, step, path) of a run's snapshots, oldest first."""
    found = []
    for path in (run / "snapshots").glob("*.safetensors"):
        match = SNAPSHOT.search(path.name)
        if match:
            found.append((int(match[1]), int(match[2]), path))
    return sorted(found)


def evaluate_snapshot(path: Path, directory: Path, per_class: int, composite: bool) -> dict:
    """The cached evaluation of one snapshot (computed on first use)."""
    from samstream.model.classes import REQUIRED_CLASSES
    from samstream.model.training.evaluate import evaluate, load_items, make_estimator

    cache = path.with_name(f"{path.stem}.eval-{directory.name}-pc{per_class}{'-composite' if composite else ''}.json")
    if cache.is_file():
        return json.loads(cache.read_text())
    items = load_items(directory, per_class=per_class, classes=set(REQUIRED_CLASSES))
    result = evaluate(items, make_estimator(str(path), composite=composite))
    cache.write_text(json.dumps(result))
    return result


def share_below_zero(result: dict) -> float:
    """Share of the required classes' items an evaluation made worse than the mixture (calibration)."""
    from samstream.model.classes import REQUIRED_CLASSES

    classes = [v for name, v in result["per_class"].items() if name in REQUIRED_CLASSES]
    items = sum(v["n"] for v in classes)
    return round(sum(v["share_below_0_db"] * v["n"] for v in classes) / items, 3) if items else float("nan")


def svg(curves: dict[str, list[tuple[float, float]]], title: str) -> str:
    """A line chart: x = CPU minutes, y = dB; one line per run."""
    width, height, left, right, top, bottom = 640, 360, 56, 150, 30, 40
    xs = [x for points in curves.values() for x, _ in points] or [0, 1]
    ys = [y for points in curves.values() for _, y in points] or [0, 1]
    x0, x1 = 0.0, max(xs) * 1.05 or 1.0
    y0, y1 = min(0.0, min(ys)) - 0.5, max(ys) + 0.5

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def py(y: float) -> float:
        return height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="11"><rect width="100%" height="100%" fill="white"/>',
             f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13">{title}</text>',
             f'<line x1="{left}" y1="{py(0)}" x2="{width - right}" y2="{py(0)}" stroke="#999" stroke-dasharray="3,3"/>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="black"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="black"/>',
             f'<text x="{(left + width - right) / 2}" y="{height - 8}" text-anchor="middle">CPU minutes of training</text>',
             f'<text x="14" y="{(top + height - bottom) / 2}" text-anchor="middle" '
             f'transform="rotate(-90 14 {(top + height - bottom) / 2})">SI-SDR improvement (dB)</text>']
    for k in range(6):
        x, y = x0 + k * (x1 - x0) / 5, y0 + k * (y1 - y0) / 5
        parts.append(f'<text x="{px(x)}" y="{height - bottom + 14}" text-anchor="middle">{x:.0f}</text>')
        parts.append(f'<text x="{left - 6}" y="{py(y) + 4}" text-anchor="end">{y:+.1f}</text>')
    for index, (name, points) in enumerate(curves.items()):
        colour = COLOURS[index % len(COLOURS)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>' for x, y in points]
        parts.append(f'<text x="{width - right + 8}" y="{top + 16 * (index + 1)}" fill="{colour}">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", type=Path, nargs="+", help="run folders with snapshots/")
    parser.add_argument("--eval", type=Path, required=True, help="evaluation directory (held-out sources)")
    parser.add_argument("--per-class", type=int, default=5, help="items per required class (default 5)")
    parser.add_argument("--composite", action="store_true", help="evaluate inside the default model")
    parser.add_argument("--max-cpu-minutes", type=float,
                        help="only the snapshots up to this much CPU time (candidates compared at one budget)")
    parser.add_argument("--svg", type=Path, help="write the chart here (e.g. docs/learning_curves.svg)")
    parser.add_argument("--title", default="Held-out learning curves (17 required classes)")
    add_threads_argument(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    curves: dict[str, list[tuple[float, float]]] = {}
    rows = []
    for run_dir in args.runs:
        for minutes, step, path in snapshots(run_dir):
            if args.max_cpu_minutes is not None and minutes > args.max_cpu_minutes:
                continue
            result = evaluate_snapshot(path, args.eval, args.per_class, args.composite)
            score = result["mean_si_sdri_required_classes_db"]
            below = share_below_zero(result)
            curves.setdefault(run_dir.name, []).append((minutes, score))
            rows.append({"run": run_dir.name, "cpu_minutes": minutes, "step": step, "db": score,
                         "share_below_0_db": below})
            print(f"{run_dir.name:>24} {minutes:5d} CPU-min  step {step:6d}  {score:+6.2f} dB  "
                  f"{100 * below:3.0f} % of items below the mixture")
    if args.svg:
        args.svg.write_text(svg(curves, args.title))
        print(f"wrote {args.svg}")
    if args.json:
        print(json.dumps({"eval": str(args.eval), "per_class": args.per_class, "points": rows}))
    return 0
