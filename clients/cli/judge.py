"""`samstream judge MIX EST --prompt TEXT --model DIR [--json]`: the SAM Audio Judge's scores of a separation.

The Judge (facebook/sam-audio-judge; model/judge.py) rates how well EST is the sound TEXT describes in MIX,
without a reference: overall, recall (is all of the target there), precision (is nothing else there) and
faithfulness (is it undistorted), on the 1-5 scale of the paper's listening tests. `--model` is the Judge's
own directory or a SAM Audio model directory that holds it (sam-audio-judge/ or judge/). Both files are
downmixed to mono and resampled to the Judge's rate; they should be equally long (a separation of MIX is).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mixture", help="the mixture audio file")
    parser.add_argument("estimate", help="the separated target to score (e.g. target.wav from samstream separate)")
    parser.add_argument("--prompt", required=True, help='what EST should be, e.g. "dog barking"')
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="the Judge directory, or a SAM Audio model directory holding it")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--json", action="store_true", help="print a JSON object as the last line")


def run(args: argparse.Namespace) -> int:
    import torch

    from samstream.model.audio import read_audio, resample, to_mono
    from samstream.model.components import JUDGE, find_component, is_judge_directory, load_judge
    from samstream.model.errors import AudioInputError
    from samstream.model.loading import resolve_model_directory

    directory = resolve_model_directory(args.model)
    if not is_judge_directory(directory):
        directory = find_component(replace(JUDGE, flag="--model"), None, directory)
    judge, loaded = load_judge(directory, device=args.device)
    print(loaded.summary(), file=sys.stderr)
    waves = []
    for path in (args.mixture, args.estimate):
        audio, rate = read_audio(path)
        waves.append(resample(to_mono(audio), rate, judge.sample_rate))
    mixture, estimate = waves
    if mixture.shape[-1] != estimate.shape[-1]:
        shorter = min(mixture.shape[-1], estimate.shape[-1])
        if shorter < 0.9 * max(mixture.shape[-1], estimate.shape[-1]):
            raise AudioInputError(f"{args.mixture} and {args.estimate} differ in length by more than 10%: the "
                                  "estimate must be a separation of this mixture")
        print(f"note: the files differ in length; both are cut to {shorter / judge.sample_rate:.2f} s",
              file=sys.stderr)
        mixture, estimate = mixture[:shorter], estimate[:shorter]
    with torch.inference_mode():
        scores = judge.score([mixture], [estimate], [args.prompt])[0]
    for name, value in scores.as_dict().items():
        print(f"{name:13s} {value:.3f}")
    if args.json:
        print(json.dumps({**scores.as_dict(), "prompt": args.prompt, "judge": str(directory)}))
    return 0
