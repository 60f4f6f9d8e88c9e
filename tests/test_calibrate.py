"""`samstream calibrate`: per-class mask floors of the default model's general separator, exact and checked."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from fixtures.real_audio import at_snr, real_sounds, real_speech
from samstream.clients.cli import main
from samstream.model.composite import load_default
from samstream.model.embedded import shipped_weights
from samstream.model.training.calibrate import (BLEND_MARGIN_DB, GRID, MIN_BAND_GAIN_DB, ItemRuns, band_split,
                                                 blend_summary, set_floor)
from samstream.model.training.evaluate import composite_estimator, evaluate, load_items

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def calibration_dir(tmp_path):
    """Real chimes and rings under real speech or noise (two general classes), and a speech item, which the speech
    expert serves and calibration leaves out."""
    rng = np.random.default_rng(0)
    sounds, speech = real_sounds(9.0), real_speech(9.0)
    items = [("phone ringing", sounds[:48000], at_snr(sounds[:48000], speech[:48000], 3.0), ["speech"]),
             ("bell", sounds[48000:96000], 0.05 * rng.standard_normal(48000), ["wind"]),
             ("speech", speech[96000:], at_snr(speech[96000:], sounds[96000:], 0.0), ["phone ringing"])]
    for index, (cls, target, interferer, interferer_classes) in enumerate(items):
        folder = tmp_path / f"item{index}"
        folder.mkdir()
        sf.write(folder / "target.wav", target.astype(np.float32), 16000, subtype="FLOAT")
        sf.write(folder / "mixture.wav", (target + interferer).astype(np.float32), 16000, subtype="FLOAT")
        (folder / "meta.json").write_text(json.dumps({"target_class": cls, "prompts": [cls],
                                                      "interferer_classes": interferer_classes}))
    return tmp_path


@pytest.fixture
def two_networks(tmp_path):
    """General weights beside each other, as an ensemble needs them: a copy of the shipped DiT (-> its path) and a
    band-split mask network with random weights, alt.safetensors."""
    import torch

    from samstream.model.masknet import MaskNet, MaskNetConfig, save_masknet

    first = tmp_path / "weights" / "first.safetensors"
    first.parent.mkdir()
    shutil.copy(shipped_weights(), first)
    shutil.copy(shipped_weights().with_suffix(".json"), first.with_suffix(".json"))
    torch.manual_seed(0)
    save_masknet(MaskNet(MaskNetConfig(body="bandsplit")), first.parent / "alt.safetensors", {"task": "general"})
    return first


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_calibrated_floors_are_the_best_of_the_grid_and_exact(calibration_dir, tmp_path, capsys):
    out = tmp_path / "floors.json"  # the set given twice: sets are pooled, each item counts once per set
    assert main(["calibrate", str(calibration_dir), str(calibration_dir), "--out", str(out), "--json"]) == 0
    table = last_json(capsys)
    assert json.loads(out.read_text())["floors"] == table["floors"]
    assert set(table["floors"]) == {"phone ringing", "bell"}  # speech is the expert's: one floor of its own
    expert = table["calibration"]["expert"]
    assert expert["n"] == 2 and table["expert_floor"] == expert["floor"] in GRID
    # the floors are mixed from two runs (floor 0 and 1): a real run at the class's one floor scores the same; per-band
    # floors (where they beat it by MIN_BAND_GAIN_DB) split the runs' difference with an STFT of the output, not the
    # network's own mask: close to a real run
    separator = load_default(mask_floor=0.0)
    for cls, row in [*table["calibration"]["per_class"].items(), ("speech", expert)]:
        assert row["one_floor"] in GRID and row["n"] == 2 and len(row["si_sdri_db_per_floor"]) == len(GRID)
        assert row["si_sdri_db_one_floor"] == max(row["si_sdri_db_per_floor"])
        assert row["si_sdri_db"] >= max(row["si_sdri_db_no_floor"], row["si_sdri_db_default_floor"])
        branch = separator.plan(cls)[0]
        for floor, score, tolerance in ((row["one_floor"], row["si_sdri_db_one_floor"], 0.01),
                                        (row["floor"], row["si_sdri_db"], 0.3)):
            if isinstance(floor, list):
                assert branch == "general" and all(f in GRID for f in floor)
                assert score >= row["si_sdri_db_one_floor"] + MIN_BAND_GAIN_DB
                floor = tuple(floor)
            set_floor(separator, branch, floor)
            result = evaluate(load_items(calibration_dir, classes={cls}), composite_estimator(separator, None), False)
            set_floor(separator, branch, 0.0)
            assert result["per_class"][cls]["si_sdri_db"] == pytest.approx(score, abs=tolerance)


def test_recalibrating_some_classes_keeps_the_others(calibration_dir, tmp_path, capsys):
    out = tmp_path / "floors.json"
    assert main(["calibrate", str(calibration_dir), "--out", str(out), "--json"]) == 0
    first = last_json(capsys)
    assert main(["calibrate", str(calibration_dir), "--classes", "bell", "--out", str(out), "--json"]) == 0
    second = last_json(capsys)
    assert second["floors"] == first["floors"] and second["expert_floor"] == first["expert_floor"]
    assert second["calibration"]["per_class"] == first["calibration"]["per_class"]


def test_a_snapshot_is_calibrated_beside_itself_and_scored_with_its_own_floors(calibration_dir, tmp_path, capsys):
    snapshot = tmp_path / "weights" / "snapshot.safetensors"  # a training snapshot: weights and their config
    snapshot.parent.mkdir()
    shutil.copy(shipped_weights(), snapshot)
    shutil.copy(shipped_weights().with_suffix(".json"), snapshot.with_suffix(".json"))
    assert main(["calibrate", str(calibration_dir), "--general", str(snapshot), "--json"]) == 0
    table = last_json(capsys)
    assert table["out"] == str(snapshot.with_suffix(".floors.json")) and table["general_weights"] == snapshot.name
    # `samstream eval --composite` finds them: each class scores what calibration found at its floors
    assert main(["eval", str(calibration_dir), "--model", str(snapshot), "--composite", "--json"]) == 0
    scored = last_json(capsys)["per_class"]
    for cls, row in [*table["calibration"]["per_class"].items(), ("speech", table["calibration"]["expert"])]:
        tolerance = 0.3 if isinstance(row["floor"], list) else 0.01
        assert scored[cls]["si_sdri_db"] == pytest.approx(row["si_sdri_db"], abs=tolerance)
    edited = json.loads(snapshot.with_suffix(".floors.json").read_text())  # the file is what decides: bell passed
    edited["floors"]["bell"] = 1.0
    snapshot.with_suffix(".floors.json").write_text(json.dumps(edited))
    assert main(["eval", str(calibration_dir), "--model", str(snapshot), "--composite", "--json"]) == 0
    bell = table["calibration"]["per_class"]["bell"]["si_sdri_db_per_floor"][GRID.index(1.0)]
    assert last_json(capsys)["per_class"]["bell"]["si_sdri_db"] == pytest.approx(bell, abs=0.01)
    assert main(["calibrate", str(calibration_dir), "--general", str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.safetensors not found" in capsys.readouterr().err


def test_ensemble_blends_are_the_best_of_the_grid_and_exact(calibration_dir, two_networks, capsys):
    """`--ensemble`: each class gets the blend of the networks (or one network alone) that separated its items best,
    written beside the weights; the default model built from the file scores what calibration found."""
    from samstream.model.composite import CompositeSeparator, load_ensemble, load_general

    first = two_networks
    assert main(["calibrate", str(calibration_dir), "--general", str(first), "--ensemble",
                 str(first.parent / "alt.safetensors"), "--json"]) == 0
    table = last_json(capsys)
    assert table["out"] == str(first.with_suffix(".ensemble.json")) and set(table["blends"]) == {"phone ringing", "bell"}
    assert table["networks"] == {"alt": {"weights": "alt.safetensors", "sha256": table["networks"]["alt"]["sha256"]}}
    paths, blends = load_ensemble(first.with_suffix(".ensemble.json"))
    others = {name: load_general(path, 0.0) for name, path in paths.items()}
    shipped = load_default(mask_floor=0.0, general_weights=first)
    blended = CompositeSeparator(shipped.general, shipped.voice, True, shipped.refiner, {}, 0.0, others, blends)
    for cls, row in table["calibration"].items():
        per_band = np.sum([np.broadcast_to(w, 4) for w in row["networks"].values()], 0)
        assert per_band == pytest.approx(np.ones(4)) and row["n"] == 1
        alone = row["alone_si_sdri_db"]
        if len(row["networks"]) > 1:  # a blend beats every network alone by the margin
            assert row["si_sdri_db"] >= max(alone.values()) + BLEND_MARGIN_DB
        else:  # a network alone: the first, or another that beats it by the margin
            (name,) = row["networks"]
            assert row["si_sdri_db"] == alone[name]
            assert name == "general" or alone[name] >= alone["general"] + BLEND_MARGIN_DB
        result = evaluate(load_items(calibration_dir, classes={cls}), composite_estimator(blended, None), False)
        tolerance = 0.3 if isinstance(row["floor"], list) else 0.01
        assert result["per_class"][cls]["si_sdri_db"] == pytest.approx(row["si_sdri_db"], abs=tolerance)
    assert main(["calibrate", str(calibration_dir), "--ensemble", str(first.parent / "alt.safetensors")]) == 2
    assert "must lie beside its file" in capsys.readouterr().err


def test_ensemble_runs_are_kept_and_read_back(calibration_dir, two_networks, tmp_path, capsys):
    """`--runs FILE` keeps each item's runs: a second calibration reads them instead of running the networks (an
    item's kept runs swapped for another's give that other item's figures), and runs of other networks are refused
    before any model loads."""
    import torch

    from samstream.model.masknet import MaskNet, MaskNetConfig, save_masknet

    first = two_networks
    command = ["calibrate", str(calibration_dir), "--general", str(first), "--ensemble",
               str(first.parent / "alt.safetensors"), "--runs", str(tmp_path / "runs.json"), "--json"]
    assert main(command) == 0
    made = last_json(capsys)["calibration"]
    kept = json.loads((tmp_path / "runs.json").read_text())
    assert {name: entry["weights"] for name, entry in kept["networks"].items()} == {"general": "first.safetensors",
                                                                                   "alt": "alt.safetensors"}
    assert sorted(kept["items"]) == [f"{calibration_dir}/item0", f"{calibration_dir}/item1"]  # the speech item: expert
    kept["items"][f"{calibration_dir}/item1"] = kept["items"][f"{calibration_dir}/item0"]
    (tmp_path / "runs.json").write_text(json.dumps(kept))
    assert main(command) == 0
    read_back = last_json(capsys)["calibration"]
    assert read_back["bell"]["si_sdri_db"] == made["phone ringing"]["si_sdri_db"]
    assert read_back["bell"]["alone_si_sdri_db"] == made["phone ringing"]["alone_si_sdri_db"]
    torch.manual_seed(1)
    save_masknet(MaskNet(MaskNetConfig(body="bandsplit")), first.parent / "alt.safetensors", {"task": "general"})
    assert main(command) == 2
    assert "holds the runs of other networks" in capsys.readouterr().err


def test_a_blend_serves_where_networks_err_apart_and_one_network_where_they_agree():
    """Two estimates with independent errors: their mean halves the error power (+3 dB), so the blend serves; two
    equal estimates: a blend adds nothing, so the first network serves alone."""
    rng = np.random.default_rng(0)
    target = rng.standard_normal(16000)
    mixture = target + rng.standard_normal(16000)
    errors = [0.3 * rng.standard_normal(16000) for _ in range(2)]
    apart = [ItemRuns.of([target + errors[0], target + errors[1], mixture], mixture, target, 16000)]
    blend = blend_summary(apart, ["general", "alt"])
    assert blend["networks"] == {"general": 0.5, "alt": 0.5}
    assert blend["si_sdri_db"] == pytest.approx(max(blend["alone_si_sdri_db"].values()) + 3.0, abs=0.3)
    agree = [ItemRuns.of([target + errors[0], target + errors[0], mixture], mixture, target, 16000)]
    assert blend_summary(agree, ["general", "alt"])["networks"] == {"general": 1.0}
    # another network alone serves only where it beats the first by the margin too
    slightly = [ItemRuns.of([target + errors[0], target + 0.99 * errors[0], mixture], mixture, target, 16000)]
    assert blend_summary(slightly, ["general", "alt"])["networks"] == {"general": 1.0}
    better = [ItemRuns.of([target + errors[0], target + 0.5 * errors[0], mixture], mixture, target, 16000)]
    assert blend_summary(better, ["general", "alt"])["networks"] == {"alt": 1.0}


def test_a_blend_weighs_each_band_to_the_network_best_there():
    """One network errs above 4 kHz, the other below 500 Hz: weights per band take each band from the one that is
    right there, far better than any one blend."""
    rng = np.random.default_rng(0)
    target = rng.standard_normal(16000)
    mixture = target + rng.standard_normal(16000)
    high_error, low_error = band_split(0.5 * rng.standard_normal(16000), 16000)[[3, 0]]
    runs = [ItemRuns.of([target + high_error, target + low_error, mixture], mixture, target, 16000)]
    blend = blend_summary(runs, ["general", "alt"])
    assert blend["networks"]["general"][0] == 1.0 and blend["networks"]["alt"][3] == 1.0
    assert np.sum(list(blend["networks"].values()), 0) == pytest.approx(np.ones(4))
    assert blend["si_sdri_db"] >= max(blend["alone_si_sdri_db"].values()) + 10.0


def test_floors_of_other_weights_are_refused(tmp_path):
    from samstream.model.composite import FLOORS_FILE, file_sha256, load_floors
    from samstream.model.errors import ModelLoadError

    weights = tmp_path / "tiny.safetensors"
    weights.write_bytes(b"weights")
    table = {"general_weights": weights.name, "general_weights_sha256": file_sha256(weights), "floors": {"bell": 0.6},
             "expert_floor": 0.1}
    (tmp_path / FLOORS_FILE).write_text(json.dumps(table))
    assert load_floors(tmp_path / FLOORS_FILE) == ({"bell": 0.6}, 0.1)
    from samstream.model.composite import CompositeSeparator

    with pytest.raises(ValueError, match="the mask floor of 'bell'"):  # a floor outside [0, 1], before any stream
        CompositeSeparator(load_default(mask_floor=0.0).general, speech_expert=False, class_floors={"bell": 1.5})
    table["floors"]["applause"] = [0.0, 1.0, 1.0, 0.8]  # one floor per band: a tuple, for bands of this code only
    (tmp_path / FLOORS_FILE).write_text(json.dumps(table))
    assert load_floors(tmp_path / FLOORS_FILE)[0] == {"bell": 0.6, "applause": (0.0, 1.0, 1.0, 0.8)}
    (tmp_path / FLOORS_FILE).write_text(json.dumps({**table, "floor_band_edges_hz": [1000, 2000, 4000]}))
    with pytest.raises(ModelLoadError, match="other bands"):
        load_floors(tmp_path / FLOORS_FILE)
    weights.write_bytes(b"retrained weights")
    with pytest.raises(ModelLoadError, match="samstream calibrate"):
        load_floors(tmp_path / FLOORS_FILE)
