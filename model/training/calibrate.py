"""`samstream calibrate DIR`: the default model's mask floors, per class for its general separator, one for its
speech expert.

Inside the default model the general separator's mask m becomes floor + (1 − floor)·m: it keeps at least that
share of its input. Where the network finds a class well, no floor is best; where it cannot, a high floor keeps
the mixture instead of a confidently wrong estimate. The expert's speech estimate s likewise becomes
s + floor·(mixture − s) (DeepFilterNet3 suppresses some of the speech it keeps). Everything after the floor is
linear, so the default model's target at any floor f is exactly f·(its target at floor 1) + (1 − f)·(its target
at floor 0): two runs per item give every floor of the grid. Each general class gets the floor of the grid with
the best mean SI-SDR improvement on its items, the expert the best on the speech classes' items pooled (the
smallest floor on ties), written beside the general weights with their SHA-256 (`load_floors` refuses floors
calibrated for other weights). Calibrate on sets other than the one you report on (`samstream data build-eval
DIR --seed 7`: fresh mixtures; several sets are pooled; docs/model_card.md says which). Training-time only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from samstream.model.training.evaluate import add_threads_argument

GRID = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)


def set_floor(separator, branch: str, floor: float) -> None:
    from samstream.model.composite import GENERAL

    if branch == GENERAL:
        separator.general.mask_floor = floor  # every general stream made from now on starts with it
    else:
        separator.expert_floor = floor


def floor_scores(separator, items, progress: bool = True) -> dict[str, tuple[str, np.ndarray]]:
    """SI-SDR improvement of each item the general separator or the expert serves, at every floor of GRID:
    class -> (branch, [items, len(GRID)])."""
    from tqdm import tqdm

    from samstream.model.composite import EXPERT, GENERAL
    from samstream.model.training.evaluate import composite_estimator, si_sdr_db, unscorable

    estimate = composite_estimator(separator, None)
    served = [(item, separator.plan(item.prompt)[0]) for item in items if unscorable(item) is None
              and item.enrollment is None]
    served = [(item, branch) for item, branch in served if branch in (GENERAL, EXPERT)]
    scores: dict[str, tuple[str, list[np.ndarray]]] = {}
    for item, branch in tqdm(served, desc="calibrate", unit="item", disable=not progress, file=sys.stderr):
        set_floor(separator, branch, 0.0)
        plain = estimate(item)
        set_floor(separator, branch, 1.0)
        kept = estimate(item)
        set_floor(separator, branch, 0.0)
        mixture_db = si_sdr_db(item.mixture, item.target)
        row = [si_sdr_db(floor * kept + (1.0 - floor) * plain, item.target) - mixture_db for floor in GRID]
        scores.setdefault(item.target_class, (branch, []))[1].append(np.array(row))
    return {cls: (branch, np.stack(rows)) for cls, (branch, rows) in sorted(scores.items())}


def best_floor(rows: np.ndarray) -> float:
    """The floor with the best mean improvement over `rows` (np.argmax: the smallest floor on ties)."""
    return GRID[int(np.argmax(rows.mean(0)))]


def summary(rows: np.ndarray, floor: float) -> dict:
    from samstream.model.composite import GENERAL_MASK_FLOOR

    means = rows.mean(0)
    return {"n": len(rows), "floor": floor, "si_sdri_db": round(float(means[GRID.index(floor)]), 3),
            "si_sdri_db_no_floor": round(float(means[0]), 3),
            "si_sdri_db_default_floor": round(float(means[GRID.index(GENERAL_MASK_FLOOR)]), 3),
            "si_sdri_db_per_floor": [round(float(mean), 3) for mean in means]}  # along GRID


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directories", type=Path, nargs="+", metavar="directory",
                        help="calibration sets (samstream data build-eval), one folder per item; several are pooled")
    parser.add_argument("--out", type=Path,
                        help="where to write the floors (default: beside the shipped general weights, where the "
                             "default model reads them)")
    parser.add_argument("--per-class", type=int, help="only the first N items of each class")
    parser.add_argument("--classes", type=lambda text: set(text.split(",")), help="only these classes, comma-separated")
    add_threads_argument(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def run(args: argparse.Namespace) -> int:
    import torch

    from samstream.model.composite import EXPERT, FLOORS_FILE, GENERAL, GENERAL_MASK_FLOOR, file_sha256, load_default
    from samstream.model.embedded import WEIGHTS_DIR
    from samstream.model.errors import UserFacingError
    from samstream.model.training.evaluate import load_items

    torch.set_num_threads(args.threads)
    items = [item for directory in args.directories
             for item in load_items(directory, per_class=args.per_class, classes=args.classes)]
    out = args.out or WEIGHTS_DIR / FLOORS_FILE
    separator = load_default(mask_floor=0.0)  # one floor for every prompt, set per run below
    scores = floor_scores(separator, items)
    if not scores:
        raise UserFacingError(f"{', '.join(map(str, args.directories))}: no items the general separator or the speech "
                              "expert serves (enrollments go to the voice picker): build a set with `samstream data "
                              "build-eval`")
    # each general class its own floor; the expert one floor for every speech class (its estimate does not depend
    # on the prompt), chosen on their items pooled
    general = {cls: summary(rows, best_floor(rows)) for cls, (branch, rows) in scores.items() if branch == GENERAL}
    expert_rows = [rows for branch, rows in scores.values() if branch == EXPERT]
    expert = summary(np.concatenate(expert_rows), best_floor(np.concatenate(expert_rows))) if expert_rows else None
    weights = WEIGHTS_DIR / "tiny.safetensors"
    table = {"general_weights": weights.name, "general_weights_sha256": file_sha256(weights),
             "floors": {cls: row["floor"] for cls, row in general.items()},
             "expert_floor": expert["floor"] if expert else 0.0,
             "calibration": {"directories": list(map(str, args.directories)), "grid": list(GRID),
                             "per_class": general, "expert": expert}}
    out.write_text(json.dumps(table, indent=1) + "\n")
    print(f"{'class':>16}  {'n':>3}  floor  SI-SDRi at it / no floor / {GENERAL_MASK_FLOOR}")
    for cls, row in [*general.items(), *([("(speech expert)", expert)] if expert else [])]:
        print(f"{cls:>16}  {row['n']:>3}  {row['floor']:5.2f}  {row['si_sdri_db']:+6.2f} / "
              f"{row['si_sdri_db_no_floor']:+6.2f} / {row['si_sdri_db_default_floor']:+6.2f}")
    print(f"wrote {out}")
    if args.json:
        print(json.dumps({"out": str(out), **table}))
    return 0
