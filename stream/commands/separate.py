"""`samstream separate IN --prompt TEXT [--span +:START-END ...] -o DIR [--model M]`."""

from __future__ import annotations

import argparse
import json

from samstream.model.errors import PromptError


def parse_span(text: str) -> tuple[str, float, float]:
    """'+:3.2-4.0' -> ('+', 3.2, 4.0)."""
    try:
        sign, times = text.split(":", 1)
        start, end = (float(x) for x in times.split("-", 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"span {text!r} must look like +:3.2-4.0 or -:7-8 (sign:start-end seconds)")
    if sign not in ("+", "-") or not 0 <= start < end:
        raise argparse.ArgumentTypeError(f"span {text!r}: sign must be + or -, and 0 <= start < end")
    return sign, start, end


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="audio file (wav, flac, ogg, mp3, ...); multi-channel input is downmixed")
    parser.add_argument("-o", "--output", required=True, help="directory for target.wav and residual.wav")
    parser.add_argument("--prompt", help='what to extract, e.g. "dog barking"')
    parser.add_argument("--span", action="append", type=parse_span, default=[], metavar="SIGN:START-END",
                        help="time-span prompt in seconds: +:3.2-4.0 (this sound) or --span=-:7-8 (not this; write it with =); repeatable")
    parser.add_argument("--model", default="tiny", help="'tiny' (embedded default) or a SAM Audio checkpoint directory")
    parser.add_argument("--text-encoder", help="local T5 directory for SAM Audio checkpoints (or SAMSTREAM_T5_DIR)")
    parser.add_argument("--steps", type=int, help="ODE steps (default: the model's)")
    parser.add_argument("--method", choices=["midpoint", "euler"], help="ODE solver (SAM Audio default: midpoint)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from samstream.model.audio import read_audio, write_audio
    from samstream.model.registry import load_separator
    from samstream.model.sampling import SolverConfig
    from samstream.model.separator import SAMAudioSeparator

    if args.prompt is None and not args.span:
        raise PromptError("give a prompt: --prompt TEXT and/or --span +:START-END")
    audio, rate = read_audio(args.input)
    separator = load_separator(args.model, args.text_encoder)
    options = {}
    if isinstance(separator, SAMAudioSeparator):
        default = separator.solver
        options = dict(solver=SolverConfig(args.method or default.method, args.steps or default.steps),
                       seed=args.seed, progress=True)
    elif args.steps:
        options = dict(steps=args.steps)
    result = separator.separate(audio, rate, prompt=args.prompt, spans=args.span, **options)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    write_audio(out / "target.wav", result.target, result.sample_rate)
    write_audio(out / "residual.wav", result.residual, result.sample_rate)
    summary = {"target": str(out / "target.wav"), "residual": str(out / "residual.wav"),
               "sample_rate": result.sample_rate, "samples": int(result.target.shape[-1])}
    print(f"wrote {summary['target']} and {summary['residual']} ({summary['samples']} samples at {rate} Hz)")
    if args.json:
        print(json.dumps(summary))
    return 0
