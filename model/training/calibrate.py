"""`samstream calibrate DIR`: the default model's mask floors, per class for its general separator, one for its
speech expert.

Inside the default model the general separator's mask m becomes floor + (1 − floor)·m: it keeps at least that
share of its input. Where the network finds a class well, no floor is best; where it cannot, a high floor keeps
the mixture instead of a confidently wrong estimate. The expert's speech estimate s likewise becomes
s + floor·(mixture − s) (DeepFilterNet3 suppresses some of the speech it keeps). Everything after the floor is
linear, so the default model's target at any floor f is exactly f·(its target at floor 1) + (1 − f)·(its target
at floor 0): two runs per item give every floor of the grid. Each general class gets the floor of the grid with
the best mean SI-SDR improvement on its items, the expert the best on the speech classes' items pooled (the
smallest floor on ties). A general class may then keep one floor per band (FLOOR_BAND_EDGES_HZ: a class the
network finds at some frequencies and not at others): the difference of the two runs is split into those bands
with an STFT and the band floors are searched one band at a time from the class's floor, kept only where they
beat it by MIN_BAND_GAIN_DB on the calibration items (the split is of the output, not of the network's own mask,
so per-band figures are close to a real run, not exact). The floors are written beside the general weights with
their SHA-256 (`load_floors` refuses floors calibrated for other weights); `--general` calibrates a training
snapshot instead of the shipped weights, so that candidates are compared inside the default model, each with its
own floors. Calibrate on sets other than the one
you report on (`samstream data build-eval DIR --seed 7`: fresh mixtures; several sets are pooled;
docs/model_card.md says which). `--classes` recalibrates those classes and keeps the others' floors. Training-time
only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samstream.model.training.evaluate import add_threads_argument

GRID = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)
MIN_BAND_GAIN_DB = 0.1  # per-band floors must beat the class's one floor by this much on its calibration items
BAND_SWEEPS = 3
VERSUS_MARGIN_DB = 0.1  # a second general network serves a class it separates better than the first by this much
SPLIT_FFT, SPLIT_HOP = 512, 128


def set_floor(separator, branch: str, floor) -> None:
    from samstream.model.composite import GENERAL

    if branch == GENERAL:
        separator.general.mask_floor = floor  # every general stream made from now on starts with it
    else:
        separator.expert_floor = floor


def band_split(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    """[S] -> [bands, S] by FLOOR_BAND_EDGES_HZ with an STFT: the bands sum back to the signal."""
    import torch

    from samstream.model.mask_floor import FLOOR_BAND_EDGES_HZ

    window = torch.hann_window(SPLIT_FFT, dtype=torch.float64)
    spectra = torch.stft(torch.from_numpy(signal.astype(np.float64)), SPLIT_FFT, SPLIT_HOP, window=window,
                         return_complex=True)
    band = torch.bucketize(torch.fft.rfftfreq(SPLIT_FFT, 1.0 / sample_rate, dtype=torch.float64),
                           torch.tensor(FLOOR_BAND_EDGES_HZ, dtype=torch.float64), right=True)
    return np.stack([torch.istft(spectra * (band == b)[:, None], SPLIT_FFT, SPLIT_HOP, window=window,
                                 length=len(signal)).numpy() for b in range(len(FLOOR_BAND_EDGES_HZ) + 1)])


@dataclass
class ItemRuns:
    """One item's two runs, reduced to what SI-SDR at any floor needs: the target at floor vector f is
    plain + Σ_b f_b·difference_b; with v = [plain, difference_1..B] (zero-mean) and the zero-mean reference r,
    gram = v·vᵀ, cross = v·r, energy = r·r."""

    gram: np.ndarray
    cross: np.ndarray
    energy: float
    mixture_db: float

    @classmethod
    def of(cls, plain: np.ndarray, kept: np.ndarray, mixture: np.ndarray, target: np.ndarray, sample_rate: int):
        from samstream.model.training.evaluate import si_sdr_db

        vectors = np.concatenate([plain[None].astype(np.float64), band_split(kept - plain, sample_rate)])
        vectors -= vectors.mean(1, keepdims=True)
        reference = target.astype(np.float64) - target.mean()
        return cls(vectors @ vectors.T, vectors @ reference, float(reference @ reference),
                   si_sdr_db(mixture, target))

    def improvement(self, floors: np.ndarray) -> np.ndarray:
        """SI-SDR improvement (dB) at each row of floors [K, bands] (as `evaluate.si_sdr_db` computes it)."""
        weights = np.concatenate([np.ones((len(floors), 1)), floors], 1)
        along = weights @ self.cross
        total = np.einsum("kb,bc,kc->k", weights, self.gram, weights)
        projection = along ** 2 / (self.energy + 1e-12)
        return 10 * np.log10((projection + 1e-12) / (np.maximum(total - projection, 0.0) + 1e-12)) - self.mixture_db


def mean_improvement(runs: list[ItemRuns], floors: np.ndarray) -> np.ndarray:
    """Mean improvement over items at each row of floors [K, bands] -> [K]."""
    return np.mean([item.improvement(floors) for item in runs], 0)


def floor_runs(separator, items, progress: bool = True) -> dict[str, tuple[str, list[ItemRuns]]]:
    """Each item the general separator or the expert serves, run at floor 0 and 1: class -> (branch, runs)."""
    from tqdm import tqdm

    from samstream.model.composite import EXPERT, GENERAL
    from samstream.model.training.evaluate import composite_estimator, unscorable

    estimate = composite_estimator(separator, None)
    served = [(item, separator.plan(item.prompt)[0]) for item in items if unscorable(item) is None
              and item.enrollment is None]
    served = [(item, branch) for item, branch in served if branch in (GENERAL, EXPERT)]
    runs: dict[str, tuple[str, list[ItemRuns]]] = {}
    for item, branch in tqdm(served, desc="calibrate", unit="item", disable=not progress, file=sys.stderr):
        set_floor(separator, branch, 0.0)
        plain = estimate(item)
        set_floor(separator, branch, 1.0)
        kept = estimate(item)
        set_floor(separator, branch, 0.0)
        runs.setdefault(item.target_class, (branch, []))[1].append(
            ItemRuns.of(plain, kept, item.mixture, item.target, item.sample_rate))
    return dict(sorted(runs.items()))


def uniform(floor: float) -> np.ndarray:
    from samstream.model.mask_floor import FLOOR_BAND_EDGES_HZ

    return np.full(len(FLOOR_BAND_EDGES_HZ) + 1, floor)


def best_band_floors(runs: list[ItemRuns], start: float) -> np.ndarray:
    """Band floors from GRID, one band at a time from `start` everywhere, while the mean improves."""
    floors = uniform(start)
    best = mean_improvement(runs, floors[None])[0]
    for _ in range(BAND_SWEEPS):
        for band in range(len(floors)):
            trials = np.repeat(floors[None], len(GRID), 0)
            trials[:, band] = GRID
            scores = mean_improvement(runs, trials)
            if scores.max() > best + 1e-9:
                best, floors = float(scores.max()), trials[int(np.argmax(scores))]
    return floors


def summary(runs: list[ItemRuns], bands: bool) -> dict:
    """The class's floor (one, or one per band where that beats it by MIN_BAND_GAIN_DB) and its figures."""
    from samstream.model.composite import GENERAL_MASK_FLOOR

    per_floor = mean_improvement(runs, np.stack([uniform(f) for f in GRID]))
    one = GRID[int(np.argmax(per_floor))]  # the smallest floor on ties
    floor, score = one, float(per_floor[GRID.index(one)])
    if bands:
        band_floors = best_band_floors(runs, one)
        band_score = float(mean_improvement(runs, band_floors[None])[0])
        if band_score >= score + MIN_BAND_GAIN_DB:
            floor, score = [float(f) for f in band_floors], band_score
    return {"n": len(runs), "floor": floor, "si_sdri_db": round(score, 3),
            "one_floor": one, "si_sdri_db_one_floor": round(float(per_floor[GRID.index(one)]), 3),
            "si_sdri_db_no_floor": round(float(per_floor[0]), 3),
            "si_sdri_db_default_floor": round(float(per_floor[GRID.index(GENERAL_MASK_FLOOR)]), 3),
            "si_sdri_db_per_floor": [round(float(mean), 3) for mean in per_floor]}  # along GRID


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directories", type=Path, nargs="+", metavar="directory",
                        help="calibration sets (samstream data build-eval), one folder per item; several are pooled")
    parser.add_argument("--general", type=Path,
                        help="general weights to calibrate (default: the shipped ones); a training snapshot's floors "
                             "let `samstream eval --model SNAPSHOT --composite` score it as the default model would "
                             "ship it")
    parser.add_argument("--out", type=Path,
                        help="where to write the floors (default: beside the general weights, where the default "
                             "model reads them: model/weights/floors.json, or NAME.floors.json beside a snapshot)")
    parser.add_argument("--per-class", type=int, help="only the first N items of each class")
    parser.add_argument("--classes", type=lambda text: set(text.split(",")),
                        help="recalibrate only these classes, comma-separated; the others keep their floors in --out")
    parser.add_argument("--versus", type=Path,
                        help="the floors file of the shipped general network (model/weights/floors.json): the weights "
                             "calibrated here become a second general network for the classes they separate better "
                             f"on the same sets (by >= {VERSUS_MARGIN_DB} dB), listed as \"serves\" in --out")
    add_threads_argument(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def run(args: argparse.Namespace) -> int:
    import torch

    from samstream.model.composite import EXPERT, GENERAL, GENERAL_MASK_FLOOR, file_sha256, floors_file, load_default
    from samstream.model.embedded import shipped_weights
    from samstream.model.mask_floor import FLOOR_BAND_EDGES_HZ
    from samstream.model.errors import UserFacingError
    from samstream.model.training.evaluate import load_items

    torch.set_num_threads(args.threads)
    items = [item for directory in args.directories
             for item in load_items(directory, per_class=args.per_class, classes=args.classes)]
    weights = args.general or shipped_weights()
    if not weights.is_file():
        raise UserFacingError(f"general weights {weights} not found (a .safetensors saved by `samstream train`)")
    out = args.out or floors_file(weights)
    sha256 = file_sha256(weights)
    separator = load_default(mask_floor=0.0, general_weights=weights)  # one floor for every prompt, set per run below
    runs = floor_runs(separator, items)
    if not runs:
        raise UserFacingError(f"{', '.join(map(str, args.directories))}: no items the general separator or the speech "
                              "expert serves (enrollments go to the voice picker): build a set with `samstream data "
                              "build-eval`")
    directories = list(map(str, args.directories))
    # each general class its own floor (or one per band); the expert one floor for every speech class (its estimate
    # does not depend on the prompt), chosen on their items pooled
    general = {cls: {**summary(rows, bands=True), "directories": directories}
               for cls, (branch, rows) in runs.items() if branch == GENERAL}
    expert_rows = [row for branch, rows in runs.values() if branch == EXPERT for row in rows]
    expert = {**summary(expert_rows, bands=False), "directories": directories} if expert_rows else None
    kept = kept_calibration(out, sha256) if args.classes else {"per_class": {}, "expert": None}
    general = dict(sorted({**kept["per_class"], **general}.items()))
    expert = expert or kept["expert"]
    table = {"general_weights": os.path.relpath(weights, out.parent), "general_weights_sha256": sha256,
             "floor_band_edges_hz": list(FLOOR_BAND_EDGES_HZ),
             "floors": {cls: row["floor"] for cls, row in general.items()},
             "expert_floor": expert["floor"] if expert else 0.0,
             "calibration": {"grid": list(GRID), "per_class": general, "expert": expert}}
    if args.versus:
        table["serves"] = better_classes(general, json.loads(args.versus.read_text())["calibration"]["per_class"])
    out.write_text(json.dumps(table, indent=1) + "\n")
    print(f"{'class':>16}  {'n':>3}  floor{'':18}  SI-SDRi at it / one floor / no floor / {GENERAL_MASK_FLOOR}")
    for cls, row in [*general.items(), *([("(speech expert)", expert)] if expert else [])]:
        floor = row["floor"] if isinstance(row["floor"], list) else [row["floor"]]
        print(f"{cls:>16}  {row['n']:>3}  {' '.join(f'{f:.2f}' for f in floor):23}  {row['si_sdri_db']:+6.2f} / "
              f"{row.get('si_sdri_db_one_floor', row['si_sdri_db']):+6.2f} / {row['si_sdri_db_no_floor']:+6.2f} / "
              f"{row['si_sdri_db_default_floor']:+6.2f}")
    if args.versus:
        print(f"serves (better than {args.versus} on the same items): {', '.join(table['serves']) or 'no class'}")
    print(f"wrote {out}")
    if args.json:
        print(json.dumps({"out": str(out), **table}))
    return 0


def better_classes(calibrated: dict, versus: dict) -> list[str]:
    """The classes whose calibration items (the same sets, the same count) these weights separated better than the
    other network's at their own floors, by at least VERSUS_MARGIN_DB."""
    same = [cls for cls, row in calibrated.items() if cls in versus
            and (row["directories"], row["n"]) == (versus[cls].get("directories"), versus[cls]["n"])]
    return sorted(cls for cls in same if calibrated[cls]["si_sdri_db"] >= versus[cls]["si_sdri_db"] + VERSUS_MARGIN_DB)


def kept_calibration(path: Path, sha256: str) -> dict:
    """The calibration in `path` of the same general weights, whose classes a `--classes` run leaves as they are
    (entries of older files name their sets once for all)."""
    if not path.is_file():
        return {"per_class": {}, "expert": None}
    table = json.loads(path.read_text())
    if table.get("general_weights_sha256") != sha256:
        return {"per_class": {}, "expert": None}
    old = table.get("calibration", {})
    named = {"directories": old["directories"]} if "directories" in old else {}
    return {"per_class": {cls: {**named, **row} for cls, row in old.get("per_class", {}).items()},
            "expert": {**named, **old["expert"]} if old.get("expert") else None}
