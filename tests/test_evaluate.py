import json

import numpy as np
import pytest
import soundfile as sf
import torch

from samstream.clients.cli import main


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def eval_dir(tmp_path):
    """Three tone-in-noise items of two classes (one with an enrollment clip, one with speech said to interfere)
    and one silent-target item."""
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    for i, (cls, silent) in enumerate([("bell", False), ("bell", False), ("speaker", False), ("door", True)]):
        folder = tmp_path / f"item{i}"
        folder.mkdir()
        target = np.zeros_like(t) if silent else 0.1 * np.sin(2 * np.pi * (400 + 300 * i) * t)
        mixture = target + 0.05 * rng.standard_normal(len(t))
        sf.write(folder / "mixture.wav", mixture.astype(np.float32), 16000, subtype="FLOAT")
        sf.write(folder / "target.wav", target.astype(np.float32), 16000, subtype="FLOAT")
        meta = {"target_class": cls, "prompts": [cls, f"a {cls}"],
                "interferer_classes": ["man speaking", "engine"] if i == 0 else ["engine"]}
        if cls == "speaker":
            sf.write(folder / "enrollment.wav", target[:4000].astype(np.float32), 16000, subtype="FLOAT")
            meta["enrollment"] = "enrollment.wav"
        (folder / "meta.json").write_text(json.dumps(meta))
    return tmp_path


def run_eval(capsys, *args) -> dict:
    assert main(["eval", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_oracle_beats_mixture_and_json_has_the_keys(eval_dir, capsys):
    mixture = run_eval(capsys, eval_dir, "--model", "mixture")
    oracle = run_eval(capsys, eval_dir, "--model", "oracle-irm")
    for result in (mixture, oracle):
        assert {"mean_si_sdri_db", "per_class", "n"} <= set(result)
        assert result["n"] == 3 and result["skipped_silent_targets"] == 1
        assert set(result["per_class"]) == {"bell", "speaker"}
        assert result["per_class"]["bell"]["n"] == 2
        assert {kind: row["n"] for kind, row in result["per_interference"].items()} == {
            "non-speech target, speech interfering": 1, "non-speech target, no speech interfering": 1}
        assert [row["class"] for row in result["per_item"]] == ["bell", "bell", "speaker"]
        bells = [row["si_sdri_db"] for row in result["per_item"][:2]]
        assert abs(sum(bells) / 2 - result["per_class"]["bell"]["si_sdri_db"]) < 1e-3
    assert mixture["mean_si_sdri_db"] == 0.0
    assert oracle["mean_si_sdri_db"] > 5.0
    assert run_eval(capsys, eval_dir, "--model", "oracle-irm", "--limit", "1")["n"] == 1
    assert run_eval(capsys, eval_dir, "--model", "mixture", "--per-class", "1", "--prompt-index", "1")["n"] == 2


def test_embedded_model_offline_and_streaming_agree(eval_dir, tmp_path, capsys, monkeypatch):
    from samstream.model import text
    from samstream.model.embedded import EmbeddedConfig, EmbeddedModel, save_embedded

    class FakeTextEncoder:
        name, dim = "fake", 384

        def encode(self, texts):
            return torch.ones(len(texts), 1, 384), torch.ones(len(texts), 1, dtype=torch.bool)

    monkeypatch.setattr(text, "MiniLMTextEncoder", FakeTextEncoder)
    torch.manual_seed(0)
    path = tmp_path / "weights" / "m.safetensors"
    save_embedded(EmbeddedModel(EmbeddedConfig(dim=32, n_heads=2, n_layers=2)), path, {"arch": "embedded"})
    offline = run_eval(capsys, eval_dir, "--model", path)
    streamed = run_eval(capsys, eval_dir, "--model", path, "--stream")
    assert streamed["stream"] and offline["n"] == streamed["n"] == 3
    assert abs(offline["mean_si_sdri_db"] - streamed["mean_si_sdri_db"]) < 1e-3


def test_unknown_model_and_missing_directory_are_user_errors(eval_dir, tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope")]) == 2
    assert main(["eval", str(eval_dir), "--model", "no-such-model"]) == 2
    assert "no-such-model" in capsys.readouterr().err


def test_a_speech_refiner_alone_is_refused_with_what_to_do(tmp_path):
    from samstream.model.errors import ModelLoadError
    from samstream.model.masknet import MaskNet, MaskNetConfig, save_masknet
    from samstream.model.training.evaluate import make_estimator

    save_masknet(MaskNet(MaskNetConfig(expert_input=True, example=False, anchors=False)), tmp_path / "refiner.safetensors",
                 {"task": "speech"})
    with pytest.raises(ModelLoadError, match="--composite"):
        make_estimator(str(tmp_path / "refiner.safetensors"))


def test_the_default_models_mask_floor_of_one_passes_the_mixture_through(eval_dir, capsys):
    """The general separator's mask floor at 1 keeps all of its input: where no speech interferes (no speech removed
    first), the default model's target is the mixture itself, 0 dB improvement; at the default floor (0.15) the
    network's mask acts; without --mask-floor each class has its calibrated floor."""
    floored = run_eval(capsys, eval_dir, "--model", "tiny", "--classes", "bell", "--mask-floor", "1")
    alone = floored["per_interference"]["non-speech target, no speech interfering"]
    assert floored["mask_floor"] == 1.0 and alone["n"] == 1
    assert abs(alone["si_sdri_db"]) < 0.05
    lifted = run_eval(capsys, eval_dir, "--model", "tiny", "--classes", "bell", "--mask-floor", "0.15")
    assert abs(lifted["per_interference"]["non-speech target, no speech interfering"]["si_sdri_db"]) > 0.3
    assert run_eval(capsys, eval_dir, "--model", "tiny", "--classes", "bell")["mask_floor"] == "per class"
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(eval_dir), "--mask-floor", "1.5"])
    assert exit_info.value.code == 2 and "from 0 to 1" in capsys.readouterr().err


def test_gender_prompts_ask_for_the_target_s_gender_in_pairs_of_a_man_and_a_woman(tmp_path, capsys):
    """`--gender-prompts` turns a voice-pick set into a man-vs-woman set: only the pairs of known, different genders,
    each prompted by the target's gender wording and without its enrollment clip."""
    rng = np.random.default_rng(1)
    pairs = {"cross-a": ["female", "male"], "cross-b": ["male", "female"], "same": ["male", "male"],
             "unknown": ["female", None]}
    for name, genders in pairs.items():
        folder = tmp_path / f"voice-{name}"
        folder.mkdir()
        target = 0.1 * rng.standard_normal(8000)
        for wav_name, wav in (("mixture", target + 0.1 * rng.standard_normal(8000)), ("target", target),
                              ("enrollment", target[:4000])):
            sf.write(folder / f"{wav_name}.wav", wav.astype(np.float32), 16000, subtype="FLOAT")
        (folder / "meta.json").write_text(json.dumps({
            "target_class": "speaker", "prompts": ["this voice"], "pair_type": "overlap-cross-gender",
            "enrollment": "enrollment.wav", "genders": genders}))
    as_voices = run_eval(capsys, tmp_path, "--model", "mixture")
    assert as_voices["n"] == 4 and set(as_voices["per_class"]) == {"speaker"} and not as_voices["gender_prompts"]
    gendered = run_eval(capsys, tmp_path, "--model", "mixture", "--gender-prompts")
    assert gendered["gender_prompts"] and gendered["n"] == 2
    assert [(row["name"], row["class"]) for row in gendered["per_item"]] == [
        ("voice-cross-a", "woman speaking"), ("voice-cross-b", "man speaking")]
    assert gendered["per_pair_type"]["overlap-cross-gender"]["n"] == 2

    from samstream.model.training.evaluate import load_items

    items = load_items(tmp_path, gender_prompts=True)
    assert [(item.prompt, item.enrollment) for item in items] == [("woman speaking", None), ("man speaking", None)]
    same_gender_only = tmp_path / "same-gender-only"
    same_gender_only.mkdir()
    (tmp_path / "voice-same").rename(same_gender_only / "voice-same")
    assert main(["eval", str(same_gender_only), "--model", "mixture", "--gender-prompts"]) == 2
    assert "a man and a woman" in capsys.readouterr().err
