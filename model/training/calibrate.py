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
so per-band figures are close to a real run, not exact). `--ensemble` blends general networks: each item is run
through every network at floor 0 (and the input kept, floor 1, once), the same algebra scores any weighted mean of
their outputs at any floor, and each class gets the blend of the weight grid (BLEND_STEP) that separated its items
best, with its floors chosen as above, where it beats the best network alone by BLEND_MARGIN_DB (else that network,
at its own floors, if it beats the first by as much, else the first); then weights per band (the same split), searched
one band at a time within each group of MAX_BLENDED networks (a blend weighs no more: each costs a stream its
compute), where they beat that by BAND_BLEND_MARGIN_DB. The blends are written to the ensemble file (`composite.ensemble_file`); `--runs`
keeps the runs, so that blends can be chosen again without running the networks. The floors are written beside the general weights with
their SHA-256 (`load_floors` refuses floors calibrated for other weights); `--general` calibrates a training
snapshot instead of the shipped weights, so that candidates are compared inside the default model, each with its
own floors. Calibrate on sets other than the one
you report on (`samstream data build-eval DIR --seed 7`: fresh mixtures; several sets are pooled;
docs/model_card.md says which). `--classes` recalibrates those classes and keeps the others' floors. Training-time
only.
"""

from __future__ import annotations

import argparse
import itertools
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
BLEND_STEP = 0.1  # the grid of a blend's weights
BLEND_MARGIN_DB = 0.1  # a blend of networks serves a class where it beats the best one alone by this much (the more
# networks a stream runs, the more it costs)
BAND_BLEND_MARGIN_DB = 0.1  # weights per band serve where they beat the class's blend (or network) by this much
MAX_BLENDED = 2  # networks in one blend at most: each costs a stream its compute, and a third added nothing on the
# calibration items (docs/model_card.md, "Weights per band")
SPLIT_FFT, SPLIT_HOP = 512, 128
SAVE_EVERY = 20  # items between two writes of a --runs file


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
    """One item's runs, reduced to what the SI-SDR of any linear combination of them needs: with v = every run split
    into bands (`band_split`, zero-mean) and r the zero-mean reference, gram = v·vᵀ, cross = v·r, energy = r·r.
    The runs: each general network's target at floor 0, then the input it kept at floor 1 (the same for every
    network), so a network's target at band floors f is Σ_b (1 − f_b)·plain_b + f_b·kept_b, and a blend of
    networks is a weighted sum of such targets."""

    gram: np.ndarray
    cross: np.ndarray
    energy: float
    mixture_db: float

    @classmethod
    def of(cls, runs: list[np.ndarray], mixture: np.ndarray, target: np.ndarray, sample_rate: int):
        from samstream.model.training.evaluate import si_sdr_db

        vectors = np.concatenate([band_split(run, sample_rate) for run in runs])
        vectors -= vectors.mean(1, keepdims=True)
        reference = target.astype(np.float64) - target.mean()
        return cls(vectors @ vectors.T, vectors @ reference, float(reference @ reference),
                   si_sdr_db(mixture, target))

    def to_json(self) -> dict:
        return {"gram": self.gram.tolist(), "cross": self.cross.tolist(), "energy": self.energy,
                "mixture_db": self.mixture_db}

    @classmethod
    def from_json(cls, row: dict) -> "ItemRuns":
        return cls(np.asarray(row["gram"], np.float64), np.asarray(row["cross"], np.float64), float(row["energy"]),
                   float(row["mixture_db"]))

    def improvement(self, coefficients: np.ndarray) -> np.ndarray:
        """SI-SDR improvement (dB) of each row of coefficients [K, runs·bands] (as `evaluate.si_sdr_db` computes
        it)."""
        along = coefficients @ self.cross
        total = np.einsum("kb,bc,kc->k", coefficients, self.gram, coefficients)
        projection = along ** 2 / (self.energy + 1e-12)
        return 10 * np.log10((projection + 1e-12) / (np.maximum(total - projection, 0.0) + 1e-12)) - self.mixture_db


def combination(floors: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Coefficients of the runs (`ItemRuns`) for networks blended by weights [K, networks] (or one per band, [K,
    networks, bands], summing to 1 in each band) at band floors [K, bands]: each network's plain run by its weight
    times (1 − floor), the kept input by the floor."""
    if weights.ndim == 2:
        weights = np.repeat(weights[:, :, None], floors.shape[1], 2)
    plain = weights * (1.0 - floors)[:, None, :]
    return np.concatenate([plain, floors[:, None, :]], 1).reshape(len(floors), -1)


def mean_improvement(runs: list[ItemRuns], floors: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Mean improvement over items at each row of floors [K, bands], of one network or of networks blended by
    weights [networks] (or [networks, bands]) -> [K]."""
    weights = np.ones(1) if weights is None else np.asarray(weights, np.float64)
    coefficients = combination(floors, np.repeat(weights[None], len(floors), 0))
    return np.mean([item.improvement(coefficients) for item in runs], 0)


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
            ItemRuns.of([plain, kept], item.mixture, item.target, item.sample_rate))
    return dict(sorted(runs.items()))


def ensemble_runs(separators: list, items: list[tuple[str, object]], kept: "RunsFile | None" = None,
                  progress: bool = True) -> dict[str, list[ItemRuns]]:
    """Each item the general branch serves, run through each separator (the default model with one general network
    each, all at floor 0) and through the first at floor 1: class -> runs. `items` are (key, item) pairs; items
    whose key a `kept` runs file holds are read from it, the new ones written to it as they are made."""
    from tqdm import tqdm

    from samstream.model.composite import GENERAL
    from samstream.model.training.evaluate import composite_estimator, unscorable

    first = separators[0]
    estimates = [composite_estimator(separator, None) for separator in separators]
    served = [(key, item) for key, item in items if unscorable(item) is None and item.enrollment is None
              and first.plan(item.prompt)[0] == GENERAL]
    known = kept.items if kept is not None else {}
    runs: dict[str, list[ItemRuns]] = {}
    made = 0
    for key, item in tqdm(served, desc="calibrate", unit="item", disable=not progress, file=sys.stderr):
        if key not in known:
            plain = [estimate(item) for estimate in estimates]
            set_floor(first, GENERAL, 1.0)
            kept_input = estimates[0](item)
            set_floor(first, GENERAL, 0.0)
            known[key] = ItemRuns.of([*plain, kept_input], item.mixture, item.target, item.sample_rate).to_json()
            made += 1
            if kept is not None and made % SAVE_EVERY == 0:
                kept.save()
        runs.setdefault(item.target_class, []).append(ItemRuns.from_json(known[key]))
    if kept is not None and made:
        kept.save()
    return dict(sorted(runs.items()))


@dataclass
class RunsFile:
    """`--runs FILE`: each item's ensemble runs (`ItemRuns`, by set and item name) with the networks that made
    them, so that blends can be chosen again (other sets pooled, another rule) without running the networks again.
    Only the networks are checked: the file stays valid while the sets and the default model's code do."""

    path: Path
    networks: dict
    items: dict[str, dict]

    @classmethod
    def open(cls, path: Path, networks: dict) -> "RunsFile":
        from samstream.model.errors import UserFacingError

        if not path.is_file():
            return cls(path, networks, {})
        table = json.loads(path.read_text())
        if table.get("networks") != networks:
            raise UserFacingError(f"--runs {path} holds the runs of other networks: give another file, or delete it "
                                  "to run these networks afresh")
        return cls(path, networks, table["items"])

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        part = self.path.with_suffix(self.path.suffix + ".part")
        part.write_text(json.dumps({"networks": self.networks, "items": self.items}))
        part.replace(self.path)


def blend_grid(networks: int) -> np.ndarray:
    """Every weight vector over `networks` on the BLEND_STEP grid (summing to 1) with at most MAX_BLENDED networks
    weighted [K, networks]."""
    steps = round(1 / BLEND_STEP)
    return np.array([weights for weights in itertools.product(range(steps + 1), repeat=networks)
                     if sum(weights) == steps and sum(w > 0 for w in weights) <= MAX_BLENDED], np.float64) / steps


def blend_summary(runs: list[ItemRuns], names: list[str]) -> dict:
    """A class's blend: the weights and floors that separated its items best, where the blend beats every network
    alone (at its own floors) by BLEND_MARGIN_DB; else the network alone that did best, the first (`names[0]`, the
    shipped one) unless another beats it by BLEND_MARGIN_DB (a smaller lead is noise on these items). Then weights
    per band, where they beat that by BAND_BLEND_MARGIN_DB. Figures of each network alone beside."""
    alone = {name: summary(runs, bands=True, weights=np.eye(len(names))[index]) for index, name in enumerate(names)}
    best_alone = max(alone, key=lambda name: alone[name]["si_sdri_db"])
    if alone[best_alone]["si_sdri_db"] < alone[names[0]]["si_sdri_db"] + BLEND_MARGIN_DB:
        best_alone = names[0]
    grid = blend_grid(len(names))
    floors = np.stack([uniform(f) for f in GRID])
    trials = combination(np.tile(floors, (len(grid), 1)), np.repeat(grid, len(floors), 0))
    scores = np.mean([item.improvement(trials) for item in runs], 0).reshape(len(grid), len(floors))
    weights = grid[np.unravel_index(np.argmax(scores), scores.shape)[0]]
    blended = summary(runs, bands=True, weights=weights)
    best_score = max(row["si_sdri_db"] for row in alone.values())
    if (weights > 0).sum() > 1 and blended["si_sdri_db"] >= best_score + BLEND_MARGIN_DB:
        chosen, share = blended, {name: round(float(w), 3) for name, w in zip(names, weights) if w > 0}
    else:
        chosen, share = alone[best_alone], {best_alone: 1.0}
    # weights per band, where the networks are best at different frequencies: searched within each group of
    # MAX_BLENDED networks from the group's best blend of one weight and one floor
    found = []
    for group in itertools.combinations(range(len(names)), min(MAX_BLENDED, len(names))):
        rows = np.flatnonzero(np.delete(grid, group, axis=1).sum(1) == 0)  # the blends within the group
        start, floor = np.unravel_index(np.argmax(scores[rows]), (len(rows), len(floors)))
        found.append(best_band_blend(runs, grid[rows], grid[rows[start]], floors[floor]))
    band_weights, band_floors, band_score = max(found, key=lambda row: row[2])
    if (band_weights != band_weights[:, :1]).any() and band_score >= chosen["si_sdri_db"] + BAND_BLEND_MARGIN_DB:
        share = {name: [round(float(w), 3) for w in row] for name, row in zip(names, band_weights) if row.any()}
        chosen = {"floor": [float(f) for f in band_floors], "si_sdri_db": round(band_score, 3)}
    return {"networks": share, "floor": chosen["floor"], "si_sdri_db": chosen["si_sdri_db"], "n": len(runs),
            "alone_si_sdri_db": {name: row["si_sdri_db"] for name, row in alone.items()}}


def best_band_blend(runs: list[ItemRuns], grid: np.ndarray, weights: np.ndarray,
                    floors: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Weights per band [networks, bands] and band floors, searched one band at a time from a blend's weights
    [networks] and floors [bands] (each band's weights from the rows of `grid`, its floor from GRID) while the mean
    improves -> weights, floors, their mean improvement."""
    weights = np.repeat(weights[:, None], len(floors), 1)
    shares = np.array(GRID)
    best = float(mean_improvement(runs, floors[None], weights)[0])
    for _ in range(BAND_SWEEPS):
        for band in range(len(floors)):
            trial_weights = np.repeat(weights[None], len(grid) * len(shares), 0)
            trial_weights[:, :, band] = np.repeat(grid, len(shares), 0)
            trial_floors = np.repeat(floors[None], len(grid) * len(shares), 0)
            trial_floors[:, band] = np.tile(shares, len(grid))
            scores = np.mean([item.improvement(combination(trial_floors, trial_weights)) for item in runs], 0)
            if scores.max() > best + 1e-9:
                k = int(np.argmax(scores))
                best, weights, floors = float(scores[k]), trial_weights[k], trial_floors[k]
    return weights, floors, best


def uniform(floor: float) -> np.ndarray:
    from samstream.model.mask_floor import FLOOR_BAND_EDGES_HZ

    return np.full(len(FLOOR_BAND_EDGES_HZ) + 1, floor)


def summary(runs: list[ItemRuns], bands: bool, weights: np.ndarray | None = None) -> dict:
    """The class's floor (one, or one per band where that beats it by MIN_BAND_GAIN_DB) and its figures, for one
    network or networks blended by `weights`."""
    from samstream.model.composite import GENERAL_MASK_FLOOR

    per_floor = mean_improvement(runs, np.stack([uniform(f) for f in GRID]), weights)
    one = GRID[int(np.argmax(per_floor))]  # the smallest floor on ties
    floor, score = one, float(per_floor[GRID.index(one)])
    if bands:
        # the band floors alone: the blend's weights kept in every band
        fixed = np.ones(1) if weights is None else np.asarray(weights, np.float64)
        _, band_floors, band_score = best_band_blend(runs, fixed[None], fixed, uniform(one))
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
    parser.add_argument("--ensemble", type=Path, nargs="+", metavar="WEIGHTS",
                        help="more general weights (files beside the general weights, each named by its file name): "
                             "calibrate blends of them with the general weights instead of floors, written to the "
                             "ensemble file (default: model/weights/ensemble.json, or NAME.ensemble.json beside other "
                             f"weights); a blend serves a class where it beats the best network alone by "
                             f"{BLEND_MARGIN_DB} dB")
    parser.add_argument("--runs", type=Path, metavar="FILE",
                        help="with --ensemble: keep each item's runs through the networks in FILE (JSON) and read "
                             "those it holds instead of running them again (to choose blends again: other sets "
                             "pooled, another rule); valid while the sets and the default model's code are unchanged")
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
    if args.runs is not None and not args.ensemble:
        raise UserFacingError("--runs keeps the runs of an --ensemble calibration: add --ensemble WEIGHTS...")
    items = [(f"{os.path.normpath(directory)}/{item.name}", item) for directory in args.directories
             for item in load_items(directory, per_class=args.per_class, classes=args.classes)]
    weights = args.general or shipped_weights()
    if not weights.is_file():
        raise UserFacingError(f"general weights {weights} not found (a .safetensors saved by `samstream train`)")
    if args.ensemble:
        return run_ensemble(args, items, weights)
    out = args.out or floors_file(weights)
    sha256 = file_sha256(weights)
    separator = load_default(mask_floor=0.0, general_weights=weights)  # one floor for every prompt, set per run below
    runs = floor_runs(separator, [item for _, item in items])
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
    out.write_text(json.dumps(table, indent=1) + "\n")
    print(f"{'class':>16}  {'n':>3}  floor{'':18}  SI-SDRi at it / one floor / no floor / {GENERAL_MASK_FLOOR}")
    for cls, row in [*general.items(), *([("(speech expert)", expert)] if expert else [])]:
        print(f"{cls:>16}  {row['n']:>3}  {floor_text(row['floor']):23}  {row['si_sdri_db']:+6.2f} / "
              f"{row.get('si_sdri_db_one_floor', row['si_sdri_db']):+6.2f} / {row['si_sdri_db_no_floor']:+6.2f} / "
              f"{row['si_sdri_db_default_floor']:+6.2f}")
    return report_written(out, table, args.json)


def run_ensemble(args: argparse.Namespace, items, weights: Path) -> int:
    from samstream.model.composite import FIRST_NETWORK, ensemble_file, file_sha256, load_default
    from samstream.model.errors import UserFacingError
    from samstream.model.mask_floor import FLOOR_BAND_EDGES_HZ

    out = args.out or ensemble_file(weights)
    paths = {FIRST_NETWORK: weights, **{path.stem: path for path in args.ensemble}}
    if len(paths) != len(args.ensemble) + 1:
        raise UserFacingError(f"--ensemble: each network needs its own file name, other than {FIRST_NETWORK!r}: got "
                              f"{', '.join(map(str, args.ensemble))}")
    for path in paths.values():
        if not path.is_file():
            raise UserFacingError(f"general weights {path} not found (a .safetensors saved by `samstream train`)")
        if path.resolve().parent != out.resolve().parent:
            raise UserFacingError(f"{path}: the networks of an ensemble must lie beside its file ({out.parent}): copy "
                                  "the weights (and their .json) there")
    networks = {name: {"weights": path.name, "sha256": file_sha256(path)} for name, path in paths.items()}
    kept = RunsFile.open(args.runs, networks) if args.runs is not None else None
    separators = [load_default(mask_floor=0.0, general_weights=path) for path in paths.values()]
    runs = ensemble_runs(separators, items, kept)
    if not runs:
        raise UserFacingError(f"{', '.join(map(str, args.directories))}: no items the general separator serves: build "
                              "a set with `samstream data build-eval`")
    directories = list(map(str, args.directories))
    blends = {cls: {**blend_summary(rows, list(paths)), "directories": directories} for cls, rows in runs.items()}
    if args.classes and out.is_file():  # the other classes keep their blends if calibrated with the same networks
        old = json.loads(out.read_text())
        if {FIRST_NETWORK: old["general_weights"], **old["networks"]} == networks:
            blends = {**old["calibration"], **blends}
    blends = dict(sorted(blends.items()))
    table = {"general_weights": networks[FIRST_NETWORK],
             "networks": {name: entry for name, entry in networks.items() if name != FIRST_NETWORK},
             "floor_band_edges_hz": list(FLOOR_BAND_EDGES_HZ),
             "blends": {cls: {"networks": row["networks"], "floor": row["floor"]} for cls, row in blends.items()},
             "calibration": blends}
    out.write_text(json.dumps(table, indent=1) + "\n")
    print(f"{'class':>16}  {'n':>3}  SI-SDRi  blend (weights; floor)  | each network alone")
    for cls, row in blends.items():
        print(f"{cls:>16}  {row['n']:>3}  {row['si_sdri_db']:+6.2f}  "
              f"{', '.join(f'{name} {floor_text(w)}' for name, w in row['networks'].items())}; "
              f"{floor_text(row['floor'])}  | "
              f"{' '.join(f'{name} {score:+.2f}' for name, score in row['alone_si_sdri_db'].items())}")
    return report_written(out, table, args.json)


def floor_text(floor) -> str:
    return " ".join(f"{share:.2f}" for share in (floor if isinstance(floor, list) else [floor]))


def report_written(out: Path, table: dict, as_json: bool) -> int:
    print(f"wrote {out}")
    if as_json:
        print(json.dumps({"out": str(out), **table}))
    return 0


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
