"""`samstream calibrate`: per-class mask floors of the default model's general separator, exact and checked."""

import json

import numpy as np
import pytest
import soundfile as sf

from fixtures.real_audio import at_snr, real_sounds, real_speech
from samstream.clients.cli import main
from samstream.model.composite import load_default
from samstream.model.training.calibrate import GRID, set_floor
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
    # the floors are mixed from two runs (floor 0 and 1): a real run at the chosen floor scores the same
    separator = load_default(mask_floor=0.0)
    for cls, row in [*table["calibration"]["per_class"].items(), ("speech", expert)]:
        assert row["floor"] in GRID and row["n"] == 2 and len(row["si_sdri_db_per_floor"]) == len(GRID)
        assert row["si_sdri_db"] >= max(row["si_sdri_db_no_floor"], row["si_sdri_db_default_floor"])
        branch = separator.plan(cls)[0]
        set_floor(separator, branch, row["floor"])
        result = evaluate(load_items(calibration_dir, classes={cls}), composite_estimator(separator, None), False)
        set_floor(separator, branch, 0.0)
        assert result["per_class"][cls]["si_sdri_db"] == pytest.approx(row["si_sdri_db"], abs=0.01)


def test_floors_of_other_weights_are_refused(tmp_path):
    from samstream.model.composite import FLOORS_FILE, file_sha256, load_floors
    from samstream.model.errors import ModelLoadError

    weights = tmp_path / "tiny.safetensors"
    weights.write_bytes(b"weights")
    table = {"general_weights": weights.name, "general_weights_sha256": file_sha256(weights), "floors": {"bell": 0.6},
             "expert_floor": 0.1}
    (tmp_path / FLOORS_FILE).write_text(json.dumps(table))
    assert load_floors(tmp_path) == ({"bell": 0.6}, 0.1)
    from samstream.model.composite import CompositeSeparator

    with pytest.raises(ValueError, match="the mask floor of 'bell'"):  # a floor outside [0, 1], before any stream
        CompositeSeparator(load_default(mask_floor=0.0).general, speech_expert=False, class_floors={"bell": 1.5})
    weights.write_bytes(b"retrained weights")
    with pytest.raises(ModelLoadError, match="samstream calibrate"):
        load_floors(tmp_path)
