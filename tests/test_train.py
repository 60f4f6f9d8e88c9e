import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from samstream.model.errors import ModelLoadError
from samstream.model.training.train import (Batch, TrainConfig, TrainingExample, below_mixture_db, build_model,
                                            embedded_loss, make_batch, masknet_loss, si_sdr, train, waveform_loss,
                                            weights_info)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ToneInNoise:
    """Synthesised mixtures: a tone burst (the target, prompt "tone") in noise; sometimes a voice-pick example."""

    def sample(self, rng: np.random.Generator) -> TrainingExample:
        n = 16000
        t = np.arange(n) / 16000
        tone = np.sin(2 * np.pi * rng.uniform(300, 2000) * t) * (np.sin(2 * np.pi * rng.uniform(1, 3) * t) > 0)
        noise = rng.standard_normal(n)
        target, mixture = 0.1 * tone, 0.1 * tone + 0.05 * noise
        example = (0.1 * np.sin(2 * np.pi * 440 * t[:8000])).astype(np.float32) if rng.random() < 0.5 else None
        return TrainingExample(mixture.astype(np.float32), target.astype(np.float32), "tone", example)


VECTORS = {"tone": torch.randn(384, generator=torch.Generator().manual_seed(0))}
TINY = {"dim": 32, "n_heads": 2, "n_layers": 2, "context_chunks": 4}


def test_si_sdr_is_scale_invariant_and_perfect_for_the_reference():
    x = torch.randn(2, 1000)
    assert torch.all(si_sdr(3 * x, x) > 70)
    assert torch.allclose(si_sdr(x + 0.1 * torch.randn(2, 1000), x), si_sdr(5 * x + 0.5 * torch.randn(2, 1000), x),
                          atol=1.5)


def test_the_speech_refiners_loss_counts_a_wrong_level_the_others_do_not():
    """The refiner's estimate is subtracted from the mixture for the residual, so it trains on SNR: half the level
    costs 6 dB there and nothing under SI-SDR."""
    target = torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
    batch = Batch(mixture=2 * target, target=target, **{name: None for name in Batch.__dataclass_fields__
                                                        if name not in ("mixture", "target")})
    _, scale_free = waveform_loss(0.5 * target, batch)
    _, level = waveform_loss(0.5 * target, batch, scale_invariant=False)
    assert scale_free["si_sdr"] > 70 and "snr" not in scale_free
    assert level["snr"] == pytest.approx(6.02, abs=0.01) and level["si_sdr"] > 70


def test_the_level_term_keeps_the_si_sdr_and_counts_only_the_level():
    """With `level_weight` the shape is scored scale-invariantly (no hedging towards silence, as SNR allows) and a
    wrong level costs its dB times the weight: half the level, 6 dB."""
    target = torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
    batch = Batch(mixture=2 * target, target=target, **{name: None for name in Batch.__dataclass_fields__
                                                        if name not in ("mixture", "target")})
    guess = target + 0.3 * torch.randn(2, 4000, generator=torch.Generator().manual_seed(1))  # 0.4 dB too loud
    exact, at_level = waveform_loss(guess, batch, level_weight=0.5)
    half, figures = waveform_loss(0.5 * guess, batch, level_weight=0.5)
    assert figures["si_sdr"] == pytest.approx(at_level["si_sdr"], abs=1e-3) and "snr" not in figures
    assert figures["level_db"] == pytest.approx(6.02 - at_level["level_db"], abs=0.01)
    assert float(half - exact) == pytest.approx(0.5 * (figures["level_db"] - at_level["level_db"]), abs=0.01)


@pytest.mark.parametrize("task, level_counts", [("general", True), ("voice", False)])
def test_a_general_mask_network_trains_on_its_level_the_voice_picker_on_si_sdr(task, level_counts):
    """Inside the default model a general network's floors mix the mixture back in and its residual is the mixture
    minus its estimate, so its loss counts the level (SNR, reported beside the SI-SDR); the voice picker keeps the
    scale-invariant loss it was trained on."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    config = TrainConfig(arch="masknet", task=task, batch_size=4, seconds=0.5, model={"hidden": 32})
    model = build_model(config)
    batch = make_batch([ToneInNoise().sample(rng) for _ in range(4)], VECTORS, config, 8192, model.config.hop, rng)
    with torch.no_grad():
        _, figures = masknet_loss(model, batch, config, torch.Generator().manual_seed(1))
    assert ("snr" in figures) is level_counts
    config.level_weight = 0.1
    with torch.no_grad():
        _, figures = masknet_loss(model, batch, config, torch.Generator().manual_seed(1))
    assert "snr" not in figures and ("level_db" in figures)


def test_the_calibration_term_counts_only_the_db_an_estimate_falls_below_the_mixture():
    g = torch.Generator().manual_seed(0)
    target, noise = torch.randn(2, 4000, generator=g), torch.randn(2, 4000, generator=g)
    mixture = target + noise  # about 0 dB
    better, worse = target + 0.1 * noise, target + 3 * noise
    floor = si_sdr(mixture, target)
    assert float(below_mixture_db(si_sdr(better, target), mixture, target, 1.0)) == 0.0
    gap = below_mixture_db(si_sdr(worse, target), mixture, target, 1.0)
    assert float(gap) == pytest.approx(float((floor - si_sdr(worse, target)).mean()), abs=1e-4)
    assert float(gap) > 5
    assert float(below_mixture_db(si_sdr(worse, target), mixture, target, 0.0)) == 0.0


def test_the_dit_objective_adds_the_calibration_term_when_weighted():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    plain = TrainConfig(arch="embedded", batch_size=4, seconds=0.5, model=TINY)
    calibrated = TrainConfig(arch="embedded", batch_size=4, seconds=0.5, model=TINY, worse_weight=0.5)
    model = build_model(plain)
    batch = make_batch([ToneInNoise().sample(rng) for _ in range(4)], VECTORS, plain, 8192, model.config.hop, rng)
    with torch.no_grad():
        loss0, info0 = embedded_loss(model, batch, plain, torch.Generator().manual_seed(1))
        loss1, info1 = embedded_loss(model, batch, calibrated, torch.Generator().manual_seed(1))
    assert info0["worse_db"] == 0.0 and info1["worse_db"] > 0  # an untrained network is worse than the mixture
    assert float(loss1 - loss0) == pytest.approx(0.5 * info1["worse_db"], rel=1e-4)


@pytest.mark.parametrize("arch", ["embedded", "baseline"])
def test_a_few_training_steps_reduce_the_loss(arch):
    torch.manual_seed(0)
    config = TrainConfig(arch=arch, batch_size=4, seconds=0.5, lr=3e-3, warmup=1, span_probability=0.3,
                         model=TINY if arch == "embedded" else {"hidden": 32})
    model = build_model(config)
    rng = np.random.default_rng(0)
    hop = model.config.hop
    fixed = make_batch([ToneInNoise().sample(rng) for _ in range(8)], VECTORS, config, 8192, hop, rng)
    loss_fn = embedded_loss if arch == "embedded" else __import__(
        "samstream.model.training.train", fromlist=["baseline_loss"]).baseline_loss

    def held_out_loss():
        with torch.no_grad():
            return float(loss_fn(model, fixed, config, torch.Generator().manual_seed(1))[0])

    before = held_out_loss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    source = ToneInNoise()
    for _ in range(15):
        batch = make_batch([source.sample(rng) for _ in range(4)], VECTORS, config, 4096, hop, rng)
        loss, _ = loss_fn(model, batch, config, torch.Generator().manual_seed(2))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert held_out_loss() < before - 0.1


def test_training_checkpoints_exports_and_resumes(tmp_path):
    config = TrainConfig(steps=3, batch_size=2, seconds=0.3, log_every=1, checkpoint_every_s=1e9, model=TINY)
    result = train(config, ToneInNoise(), VECTORS, tmp_path, progress=False)
    assert result["step"] == 3
    assert (tmp_path / "checkpoint.pt").is_file()
    info = json.loads((tmp_path / "model.safetensors").with_suffix(".json").read_text())
    assert info["arch"] == "embedded" and info["step"] == 3
    config.steps = 5
    assert train(config, ToneInNoise(), VECTORS, tmp_path, progress=False)["step"] == 5
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]  # resumed at step 3, not restarted

    from samstream.model.embedded import load_embedded

    separator = load_embedded(tmp_path / "model.safetensors")
    out = separator.separate(np.zeros(2000, np.float32) + 0.01, 16000, spans=[("+", 0.0, 0.05)])
    assert out.target.shape == (2000,)


class SometimesBroken(ToneInNoise):
    """Every draw of `broken` (a set of draw numbers) gives an example whose mixture is NaN."""

    def __init__(self, broken: set[int]):
        self.broken, self.draws = broken, 0

    def sample(self, rng: np.random.Generator) -> TrainingExample:
        example = super().sample(rng)
        if self.draws in self.broken:
            example.mixture[:] = np.nan
        self.draws += 1
        return example


def test_a_non_finite_step_is_skipped_and_logged_and_a_diverged_run_stops_with_what_to_do(tmp_path, capsys):
    from samstream.model.errors import UserFacingError
    from samstream.model.training import train as train_module

    config = TrainConfig(steps=4, batch_size=2, seconds=0.3, log_every=1, checkpoint_every_s=1e9, model=TINY)
    train(config, SometimesBroken({2}), VECTORS, tmp_path / "a", progress=False)  # the second batch is broken
    weights = load_file(str(tmp_path / "a" / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())
    logged = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert [entry.get("skipped_steps", 0) for entry in logged] == [0, 1, 1, 1]
    assert "step 1: the loss or its gradient is not finite" in capsys.readouterr().err

    config.steps = 2 * train_module.MAX_BAD_STEPS_IN_A_ROW
    with pytest.raises(UserFacingError, match="diverged at step .*lower --lr"):
        train(config, SometimesBroken(set(range(1000))), VECTORS, tmp_path / "b", progress=False)


def _loader_batches(start_step: int, count: int, workers: int = 2) -> list[dict]:
    from torch.utils.data import DataLoader

    from samstream.model.training.train import BatchStream

    config = TrainConfig(batch_size=2, seconds=0.3, model=TINY)
    stream = BatchStream(ToneInNoise(), VECTORS, config, 4096, 256, start_step)
    batches = []
    for fields in DataLoader(stream, batch_size=None, num_workers=workers):
        batches.append(fields)
        if len(batches) == count:
            return batches


def test_worker_batches_differ_across_workers_and_repeat_for_the_same_start_step():
    first = _loader_batches(start_step=7, count=4)
    mixtures = [b["mixture"] for b in first]
    assert all(m.shape == (2, 4096) for m in mixtures)
    for i in range(4):  # batches 0, 2 come from worker 0 and 1, 3 from worker 1: no shared RNG stream
        for j in range(i + 1, 4):
            assert not torch.allclose(mixtures[i], mixtures[j])
    again = _loader_batches(start_step=7, count=4)
    assert all(torch.equal(a["mixture"], b["mixture"]) for a, b in zip(first, again))
    later = _loader_batches(start_step=8, count=1)
    assert not torch.allclose(later[0]["mixture"], mixtures[0])


def test_training_with_workers_checkpoints_and_resumes(tmp_path):
    config = TrainConfig(steps=3, batch_size=2, seconds=0.3, log_every=1, checkpoint_every_s=1e9, model=TINY,
                         workers=2)
    assert train(config, ToneInNoise(), VECTORS, tmp_path, progress=False)["step"] == 3
    assert json.loads((tmp_path / "config.json").read_text())["workers"] == 2
    config.steps = 5
    assert train(config, ToneInNoise(), VECTORS, tmp_path, progress=False)["step"] == 5
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
    assert json.loads((tmp_path / "model.json").read_text())["step"] == 5


def test_without_workers_the_loop_draws_from_the_checkpointed_rng(tmp_path, monkeypatch):
    """workers = 0 keeps the old behaviour: two interrupted runs equal one uninterrupted run, bit for bit
    (with a constant learning rate: the cosine schedule depends on the horizon, which differs here)."""
    monkeypatch.setattr("samstream.model.training.train.learning_rate", lambda config, step: config.lr)
    config = TrainConfig(steps=4, batch_size=2, seconds=0.3, checkpoint_every_s=1e9, model=TINY)
    torch.manual_seed(0)  # the initial weights come from torch's global generator
    train(config, ToneInNoise(), VECTORS, tmp_path / "whole", progress=False)
    config.steps = 2
    torch.manual_seed(0)
    train(config, ToneInNoise(), VECTORS, tmp_path / "halves", progress=False)
    config.steps = 4
    train(config, ToneInNoise(), VECTORS, tmp_path / "halves", progress=False)
    whole = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=False)["model"]
    halves = torch.load(tmp_path / "halves" / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(whole[k], halves[k]) for k in whole)


def test_amp_and_a_horizon_fitted_to_the_time(tmp_path):
    config = TrainConfig(steps=10**6, batch_size=2, seconds=0.3, checkpoint_every_s=1e9, model=TINY, amp=True)
    result = train(config, ToneInNoise(), VECTORS, tmp_path, progress=False, max_seconds=1.5, fit_horizon=True)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["amp"] and result["step"] <= saved["steps"] < 10**6  # the horizon was fitted to the time
    assert np.isfinite(result["loss"])
    assert (tmp_path / "checkpoint.pt").is_file()  # stopped after a checkpoint


def test_a_new_run_starts_from_given_weights_with_a_fresh_schedule(tmp_path):
    first = tmp_path / "first"
    train(TrainConfig(steps=3, batch_size=2, seconds=0.3, checkpoint_every_s=1e9, model=TINY), ToneInNoise(), VECTORS,
          first, progress=False)
    info = weights_info(first / "model.safetensors")
    assert (info["arch"], info["task"], info["step"], info["config"]["dim"]) == ("embedded", "general", 3, 32)
    # lr 0: whatever the continuation does, its weights are the ones it started from, bit for bit
    init = {k: info[k] for k in ("path", "sha256", "step", "cpu_s")}
    config = TrainConfig(steps=2, batch_size=2, seconds=0.3, lr=0.0, log_every=1, checkpoint_every_s=1e9,
                         model=info["config"], init=init)
    second = tmp_path / "second"
    assert train(config, ToneInNoise(), VECTORS, second, progress=False)["step"] == 2  # its own schedule, from 0
    before, after = load_file(str(first / "model.safetensors")), load_file(str(second / "model.safetensors"))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert json.loads((second / "config.json").read_text())["init"] == init
    # a run whose starting weights changed since it was made refuses to start from the wrong ones
    (first / "model.safetensors").write_bytes((first / "model.safetensors").read_bytes() + b" ")
    with pytest.raises(ModelLoadError, match="gone or changed"):
        train(config, ToneInNoise(), VECTORS, tmp_path / "third", progress=False)


@pytest.fixture
def train_command(tmp_path):
    """`samstream train --data TOY_CACHE ...` as a function, and the toy cache."""
    import argparse

    from samstream.model.class_prompts import all_train_prompts
    from samstream.model.training import cli_train
    from samstream.model.training.index import build_index
    from samstream.model.training.toy_cache import make_toy_cache, write_toy_rir_bank
    from samstream.model.training.train import embed_prompts

    class FakeEncoder:  # the vectors' values do not matter here; MiniLM takes ~12 s to load
        def encode(self, texts):
            return torch.zeros(len(texts), 1, 384), torch.ones(len(texts), 1, dtype=torch.bool)

    cache = make_toy_cache(tmp_path / "cache")
    build_index(cache, workers=1)
    write_toy_rir_bank(cache)  # the real room bank takes ~20 s to simulate
    embed_prompts(all_train_prompts(), cache / "prompt_vectors.safetensors", encoder=FakeEncoder())

    def run(*argv):
        parser = argparse.ArgumentParser()
        cli_train.add_arguments(parser)
        return cli_train.run(parser.parse_args(["--data", str(cache), *argv]))

    return run, cache


def test_the_train_command_starts_a_run_from_shipped_weights_and_refuses_what_does_not_fit(tmp_path, train_command):
    from samstream.model.embedded import WEIGHTS_DIR
    from samstream.model.errors import UserFacingError

    run, _ = train_command
    shipped = WEIGHTS_DIR / "tiny.safetensors"
    with pytest.raises(UserFacingError, match="no weights there"):
        run("--run", str(tmp_path / "a"), "--init", str(tmp_path / "missing.safetensors"))
    with pytest.raises(UserFacingError, match="holds embedded weights, not --arch masknet"):
        run("--run", str(tmp_path / "a"), "--init", str(shipped), "--arch", "masknet")
    with pytest.raises(UserFacingError, match="drop --model-config"):
        run("--run", str(tmp_path / "a"), "--init", str(shipped), "--model-config", '{"dim": 64}')
    with pytest.raises(UserFacingError, match="only deepen a fullband mask network"):  # not shallower
        run("--run", str(tmp_path / "a"), "--init", str(WEIGHTS_DIR / "voice.safetensors"), "--model-config",
            '{"layers": 1}')
    assert not (tmp_path / "a").exists()  # refused before anything was made

    run("--run", str(tmp_path / "a"), "--init", str(shipped), "--steps", "1", "--batch-size", "1", "--seconds",
        "0.5", "--lr", "0")
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    shipped_step = json.loads(shipped.with_suffix(".json").read_text())["step"]
    assert (saved["arch"], saved["task"], saved["init"]["step"]) == ("embedded", "general", shipped_step)
    before, after = load_file(str(shipped)), load_file(str(tmp_path / "a" / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(UserFacingError, match="has a checkpoint and resumes from it"):
        run("--run", str(tmp_path / "a"), "--init", str(shipped))
    with pytest.raises(UserFacingError, match=r"whose network is fixed \(dim 128 -> 64\): drop --model-config"):
        run("--run", str(tmp_path / "a"), "--model-config", '{"dim": 64}')
    # the network it already is: resumed (a --model-config that replaced the saved one would fail at load)
    run("--run", str(tmp_path / "a"), "--model-config", json.dumps({"dim": saved["model"]["dim"]}), "--steps", "2")
    assert json.loads((tmp_path / "a" / "config.json").read_text())["model"] == saved["model"]


def test_the_general_separator_trains_on_a_general_pool_and_its_run_keeps_needing_one(tmp_path, train_command):
    from samstream.model.embedded import WEIGHTS_DIR
    from samstream.model.errors import UserFacingError
    from samstream.model.training.speech_pool import SpeechPoolConfig, write_pool

    run, cache = train_command
    pool = tmp_path / "pool"
    write_pool(cache, pool, shards=1, config=SpeechPoolConfig(seconds=1.0, shard_examples=2, targets="general"),
               progress=False)
    common = ("--run", str(tmp_path / "a"), "--batch-size", "1", "--seconds", "0.5")
    run(*common, "--init", str(WEIGHTS_DIR / "tiny.safetensors"), "--pool", str(pool), "--steps", "1")
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert (saved["task"], saved["speech_removed"]) == ("general", True)
    with pytest.raises(UserFacingError, match="trains on a general pool: give --pool"):
        run(*common, "--steps", "2")
    run(*common, "--pool", str(pool), "--steps", "2")  # resumed on it
    assert json.loads((tmp_path / "a" / "config.json").read_text())["speech_removed"]
