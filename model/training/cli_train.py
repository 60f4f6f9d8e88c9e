"""`samstream train [--arch embedded|masknet|baseline] [--task general|voice|speech] --run DIR ...`: train (or resume)
the embedded general separator, a mask network (general separator candidate, the voice picker or the speech refiner)
or the baseline.

Training-time only; heavy imports stay inside `run` so `samstream --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", choices=["embedded", "masknet", "baseline"], default=None,
                        help="network (default: the run's, else embedded)")
    parser.add_argument("--task", choices=["general", "voice", "speech"], default=None,
                        help="general: text/span/example prompts on mixtures of every class; voice: pick one voice "
                             "of two by its enrollment clip (or its gender's wording); speech: refine the speech "
                             "expert's estimate for the speech classes (needs --pool) (default: the run's, else general)")
    parser.add_argument("--pool", type=Path, default=None,
                        help="the folder `samstream data speech-pool` writes to: needed by --task speech; with --task "
                             "general (a pool written with --targets general) the general separator hears what the "
                             "default model feeds it (the mixture less the expert's speech for the classes it "
                             "separates that way), and the run keeps needing it")
    parser.add_argument("--run", type=Path, required=True, help="run folder (checkpoints, log); resumes if it exists")
    parser.add_argument("--data", type=Path, default=None, help="data cache (default: $SAMSTREAM_DATA or ~/.cache/...)")
    parser.add_argument("--steps", type=int, help="total optimiser steps")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seconds", type=float, help="crop length per example")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--sisdr-weight", type=float)
    parser.add_argument("--worse-weight", type=float,
                        help="weight of the calibration term that penalises estimates worse than the "
                             "mixture itself (per dB)")
    parser.add_argument("--level-weight", type=float,
                        help="mask networks: train on SI-SDR + this x the output's level error (dB) instead of a "
                             "general network's SNR (default 0: SNR)")
    parser.add_argument("--t0-probability", type=float, help="share of examples trained at t = 0 (1-step regime)")
    parser.add_argument("--warmup", type=int, help="learning-rate warm-up steps")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:0 ...")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--workers", type=int, default=0,
                        help="processes that make batches (default 0: the training loop makes them, as before); "
                             "resuming gives the same batches for the same step, seed and worker count")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast of the network (CUDA)")
    parser.add_argument("--max-minutes", type=float, help="stop (after a checkpoint) after this much wall time")
    parser.add_argument("--max-cpu-minutes", type=float,
                        help="stop (after a checkpoint) once the run has used this much CPU time in all, resumed "
                             "sessions included: a fair budget for comparing candidates on a shared machine")
    parser.add_argument("--snapshot-every-cpu-minutes", type=float,
                        help="keep the weights every N CPU minutes in RUN/snapshots/ (learning curves)")
    parser.add_argument("--example-probability", type=float, help="use an example clip as the prompt this often")
    parser.add_argument("--text-drop-probability", type=float, help="with an example clip, drop the text this often")
    parser.add_argument("--augment", default=None,
                        help="--task general: the mixtures' augmentation, standard or heavy (wider EQ and speed, more "
                             "reverb, level rides, clipping, phone/laptop devices, noise floors; checked against "
                             "train.AUGMENT_RECIPES before any model loads; default: the run's, else standard)")
    parser.add_argument("--mixture-config", type=json.loads, default=None,
                        help="the training data's settings as JSON: --task general: MixtureConfig overrides, e.g. "
                             "'{\"extra_class_weight\": 0.2}' (model/training/mixtures.py); --task voice: VoiceConfig "
                             "overrides, e.g. '{\"noise_db\": [-20, 5]}' (model/training/voices.py); default: the run's")
    parser.add_argument("--fit-horizon", action="store_true",
                        help="with --max-minutes: fit --steps to the measured step rate so the learning-rate "
                             "schedule ends when the time does (saved in config.json)")
    parser.add_argument("--model-config", type=json.loads, default=None,
                        help='model config overrides as JSON, e.g. \'{"dim": 192, "n_layers": 6}\'')
    parser.add_argument("--init", type=Path, default=None,
                        help="start a new run from these weights (model/weights/*.safetensors or another run's "
                             "model.safetensors): the network's arch, task and config come from the file's .json, "
                             "the optimiser and the learning-rate schedule start afresh (set --steps, --lr, "
                             "--warmup for the continuation); recorded in the run's config.json. With a fullband "
                             "mask network's weights, --model-config '{\"layers\": N}' makes it deeper: the new GRU "
                             "layers start at zero, so the run starts from what the weights compute")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def initial_weights(args: argparse.Namespace) -> dict:
    """The TrainConfig values a new run started `--init WEIGHTS` takes from them (checked before any data loads)."""
    from samstream.model.errors import UserFacingError
    from samstream.model.training.train import weights_info

    if (args.run / "checkpoint.pt").is_file():
        raise UserFacingError(f"{args.run} has a checkpoint and resumes from it: --init starts a new run, so give "
                              "another --run (or drop --init to resume)")
    info = weights_info(args.init)
    if args.arch is not None and args.arch != info["arch"]:
        raise UserFacingError(f"--init {args.init} holds {info['arch']} weights, not --arch {args.arch}")
    model = info.pop("config")
    if args.model_config is not None:  # only a deeper fullband mask network (masknet.load_deeper)
        layers = args.model_config.get("layers")
        if (set(args.model_config) != {"layers"} or info["arch"] != "masknet" or model.get("body") != "fullband"
                or not isinstance(layers, int) or layers <= model["layers"]):
            raise UserFacingError("--init takes the network's config from the weights' .json; --model-config may "
                                  "only deepen a fullband mask network ('{\"layers\": N}' with N above the "
                                  "weights' layers): drop --model-config")
        model = {**model, "layers": layers}
    return {"arch": info["arch"], "task": args.task or info["task"], "model": model,
            "init": {k: info[k] for k in ("path", "sha256", "step", "cpu_s")}}


def resumed_model_config(args: argparse.Namespace, saved: dict | None) -> dict | None:
    """--model-config over the run's saved network config: a new run takes it (merged over the saved one when the
    run folder has a config but no checkpoint); a run with a checkpoint resumes the network the checkpoint holds,
    so a --model-config that would change it is refused instead of failing later at load."""
    from samstream.model.errors import UserFacingError

    if args.model_config is None or saved is None or args.init is not None:
        return args.model_config
    merged = {**saved, **args.model_config}
    if merged != saved and (args.run / "checkpoint.pt").is_file():
        changed = ", ".join(f"{k} {saved.get(k)!r} -> {v!r}" for k, v in args.model_config.items() if saved.get(k) != v)
        raise UserFacingError(f"{args.run} resumes from its checkpoint, whose network is fixed ({changed}): drop "
                              "--model-config, or give another --run to train a new network")
    return merged


def run(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from samstream.model.errors import UserFacingError
    from samstream.model.training.common import DataError, default_cache_dir
    from samstream.model.class_prompts import all_train_prompts
    from samstream.model.training.train import MixtureSource, TrainConfig, embed_prompts, train

    if args.fit_horizon and not args.max_minutes:
        raise UserFacingError("--fit-horizon needs --max-minutes (the time the schedule is fitted to)")
    saved = args.run / "config.json"
    values = json.loads(saved.read_text()) if saved.is_file() else {}
    overrides = {"arch": args.arch, "task": args.task, "steps": args.steps, "batch_size": args.batch_size, "seconds": args.seconds,
                 "lr": args.lr, "sisdr_weight": args.sisdr_weight,
                 "worse_weight": args.worse_weight, "level_weight": args.level_weight,
                 "t0_probability": args.t0_probability,
                 "warmup": args.warmup, "device": args.device, "threads": args.threads, "workers": args.workers,
                 "amp": args.amp, "model": resumed_model_config(args, values.get("model")),
                 "snapshot_every_cpu_minutes": args.snapshot_every_cpu_minutes,
                 "example_probability": args.example_probability,
                 "text_drop_probability": args.text_drop_probability, "augment": args.augment,
                 "mixture": args.mixture_config}
    values.update({k: v for k, v in overrides.items() if v is not None})
    if args.init is not None:
        values.update(initial_weights(args))
    if args.pool is not None and values.get("task", "general") == "general":
        values["speech_removed"] = True
    config = TrainConfig(**{k: v for k, v in values.items() if k in {f.name for f in fields(TrainConfig)}})
    data = args.data or default_cache_dir()
    if not (data / "index.json").is_file():
        raise DataError(f"no data index in {data}: run `samstream data fetch` and `samstream data index` first")
    if config.task == "speech":
        from samstream.model.training.speech_pool import SpeechPoolSource

        if args.pool is None:
            raise UserFacingError("--task speech needs --pool DIR (written by `samstream data speech-pool --out DIR`)")
        source = SpeechPoolSource(args.pool)
    elif config.speech_removed:
        from samstream.model.training.speech_pool import SpeechPoolSource

        if args.pool is None:
            raise UserFacingError(f"{args.run} trains on a general pool: give --pool DIR (written by `samstream data "
                                  "speech-pool --out DIR --targets general`)")
        source = SpeechPoolSource(args.pool, targets="general")
    elif config.task == "voice":
        from samstream.model.training.voices import VoicePairSource

        source = VoicePairSource(data, seconds=config.seconds + 0.3, overrides=config.mixture)
    else:
        source = MixtureSource(data, seconds=config.seconds + 0.3, augment=config.augment,
                               mixture=config.mixture)
    cached = args.run / "prompt_vectors.safetensors"
    if not cached.is_file() and (data / cached.name).is_file():
        # a training pack carries the vectors: the GPU machine has no MiniLM encoder
        args.run.mkdir(parents=True, exist_ok=True)
        for path in (data / cached.name, (data / cached.name).with_suffix(".json")):
            shutil.copyfile(path, args.run / path.name)
    vectors = embed_prompts(all_train_prompts(), cached)
    result = train(config, source, vectors, args.run,
                   max_seconds=args.max_minutes * 60 if args.max_minutes else None, fit_horizon=args.fit_horizon,
                   max_cpu_seconds=args.max_cpu_minutes * 60 if args.max_cpu_minutes else None)
    print(f"trained to step {result['step']}; weights at {args.run / 'model.safetensors'}")
    if args.json:
        print(json.dumps({"run": str(args.run), **result}))
    return 0
