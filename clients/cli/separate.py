"""`samstream separate IN --prompt TEXT [--span +:START-END ...] [--video V] [--mask M] [-o DIR] [--model M]`.

Writes target.wav and residual.wav to separated/NAME/ (NAME: the input's file name without its extension,
as demucs does) or to -o DIR. Arguments are checked before the model loads (clients/cli/checks.py).
With the default model, the result equals what `samstream stream` of the same file returns, sample for
sample (the streaming path over the whole file, resampled by the same resampler).

Visual prompts (SAM Audio checkpoints with their PE-Core vision tower): `--mask` is one image (or a .npy
array) marking the object in the video's frames; it is applied to every frame (a [frames, H, W] .npy
gives one mask per frame). `--video` defaults to the input file itself; without `--mask` its frames are
taken as already masked. `--mask-marks keep` (default) keeps the marked object and blacks out the rest;
`blackout` blacks out the marked pixels, the literal rule of the official `processor.mask_videos`.

SAM Audio's side models (each loaded only when asked for, from its own directory or a sub-directory of
the model directory; docs/sam_audio.md): `--predict-spans` turns the text prompt into "+" spans with
PE-A-Frame, as the official pipeline does; `--candidates K` separates K times with different noise and
keeps the SAM Audio Judge's favourite (K times the cost of one separation, plus the Judge).
"""

from __future__ import annotations

import argparse
import json
import sys

from samstream.clients import not_separated_note
from samstream.model.anchors import parse_span
from samstream.model.errors import PromptError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="audio file (wav, flac, ogg, mp3, ...); multi-channel input is downmixed")
    parser.add_argument("-o", "--output", help="directory for target.wav and residual.wav (default: separated/NAME/, "
                                                "NAME being the input's file name without its extension)")
    parser.add_argument("--prompt", help='what to extract, e.g. "dog barking"')
    parser.add_argument("--span", action="append", type=parse_span, default=[], metavar="SIGN:START-END",
                        help="time-span prompt in seconds: +:3.2-4.0 (this sound) or --span=-:7-8 (not this; write it with =); repeatable")
    parser.add_argument("--video", help="video file for a visual prompt (default with --mask: the input file)")
    parser.add_argument("--mask", help="object mask: an image (PNG, JPEG...; bright = object) applied to every "
                                       "frame, or a .npy array [H,W] / [frames,H,W] (non-zero = object)")
    parser.add_argument("--mask-marks", choices=["keep", "blackout"], default="keep",
                        help="keep: show only the masked object (default); blackout: black out the masked pixels "
                             "(the official processor.mask_videos rule)")
    parser.add_argument("--model", default="tiny", help="'tiny' (embedded default) or a SAM Audio checkpoint directory")
    parser.add_argument("--text-encoder", help="local T5 directory for SAM Audio checkpoints (or SAMSTREAM_T5_DIR)")
    parser.add_argument("--enroll", metavar="FILE",
                        help="a clip of the voice (or sound) to extract: the prompt's audio example (the default "
                             "model serves it with its voice picker where installed, else its general network)")
    parser.add_argument("--no-speech-expert", action="store_true",
                        help="default model: run its own networks alone, without the DeepFilterNet3 speech expert")
    parser.add_argument("--steps", type=int, help="ODE steps (default: the model's)")
    parser.add_argument("--method", choices=["midpoint", "euler"], help="ODE solver (SAM Audio default: midpoint)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed")
    parser.add_argument("--predict-spans", action="store_true",
                        help="SAM Audio: predict where the text prompt sounds (PE-A-Frame) and prompt with those "
                             "spans; ignored when --span is given, as in the official pipeline")
    parser.add_argument("--candidates", type=int, default=1, metavar="K",
                        help="SAM Audio: separate K times with different noise and keep the SAM Audio Judge's best "
                             "(K times slower; default 1)")
    parser.add_argument("--span-predictor", metavar="DIR",
                        help="PE-A-Frame directory (default: $SAMSTREAM_SPAN_PREDICTOR_DIR or inside the model "
                             "directory)")
    parser.add_argument("--judge", metavar="DIR",
                        help="SAM Audio Judge directory (default: $SAMSTREAM_JUDGE_DIR or inside the model directory)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def run(args: argparse.Namespace) -> int:
    from samstream.model.audio import read_audio, write_audio
    from samstream.model.registry import load_separator
    from samstream.model.sampling import SolverConfig
    from samstream.model.separator import SAMAudioSeparator

    from samstream.clients.cli import checks

    video = args.video or (args.input if args.mask else None)
    if checks.prompt_text(args.prompt) is None and not args.span and video is None and args.enroll is None:
        raise PromptError("give a prompt: --prompt TEXT, --span +:START-END, --enroll FILE and/or --video/--mask")
    if args.enroll and args.model != "tiny":
        raise PromptError("--enroll needs the default model (--model tiny): SAM Audio takes no audio prompts")
    checks.model_name(args.model)
    out = checks.output_dir(args.output, checks.input_file(args.input))
    if args.enroll:
        checks.input_file(args.enroll)
    audio, rate = read_audio(args.input)
    enrollment = read_audio(args.enroll) if args.enroll else None
    separator = load_separator(args.model, args.text_encoder, speech_expert=not args.no_speech_expert)
    options = {}
    if isinstance(separator, SAMAudioSeparator):
        default = separator.solver
        options = dict(solver=SolverConfig(args.method or default.method, args.steps or default.steps),
                       seed=args.seed, progress=True, predict_spans=args.predict_spans,
                       candidates=args.candidates)
        if args.predict_spans or args.candidates > 1:
            from samstream.model.components import side_models_for

            separator.side_models = side_models_for(args.model, args.span_predictor, args.judge,
                                                    report=lambda line: print(line, file=sys.stderr))
        if video is not None:
            options["masked_video"] = read_visual_prompt(separator, video, args.mask, args.mask_marks,
                                                         audio.shape[-1] / rate)
    elif video is not None:
        raise PromptError("visual prompts need a SAM Audio checkpoint with its vision encoder (--model DIR); "
                          f"the {args.model!r} model has none")
    elif args.predict_spans or args.candidates > 1:
        raise PromptError(f"--predict-spans and --candidates need a SAM Audio checkpoint (--model DIR); the "
                          f"{args.model!r} model has no span predictor or Judge")
    else:
        options = dict(steps=args.steps) if args.steps else {}
        if enrollment is not None:
            options["example"] = enrollment
    result = separator.separate(audio, rate, prompt=args.prompt, spans=args.span, **options)
    out.mkdir(parents=True, exist_ok=True)
    write_audio(out / "target.wav", result.target, result.sample_rate)
    write_audio(out / "residual.wav", result.residual, result.sample_rate)
    summary = {"target": str(out / "target.wav"), "residual": str(out / "residual.wav"),
               "sample_rate": result.sample_rate, "samples": int(result.target.shape[-1])}
    print(f"wrote {summary['target']} and {summary['residual']} ({summary['samples']} samples at {rate} Hz)")
    if hasattr(separator, "understand"):  # the default model says how it took the prompt
        summary["understood"] = separator.understand(args.prompt, args.span, enrollment)
        if note := not_separated_note(summary["understood"]):
            print(note, file=sys.stderr)
    if getattr(result, "predicted_spans", None) is not None:
        summary["predicted_spans"] = [list(span) for span in result.predicted_spans]
        print("predicted spans: " + (", ".join(f"{s}:{a:.2f}-{b:.2f}" for s, a, b in result.predicted_spans)
                                     or "none (the predictor found the prompt nowhere)"))
    if getattr(result, "candidate_scores", None) is not None:
        summary["candidate_scores"] = result.candidate_scores
        best = max(range(len(result.candidate_scores)), key=result.candidate_scores.__getitem__)
        print("Judge overall per candidate: " + ", ".join(f"{s:.3f}" for s in result.candidate_scores)
              + f" (kept candidate {best})")
    if args.json:
        print(json.dumps(summary))
    return 0


def read_visual_prompt(separator, video: str, mask: str | None, mask_marks: str, seconds: float):
    """Decode only the frames the latent frames of `seconds` of audio use, masked and resized for the encoder."""
    import math

    from samstream.model.video import read_mask, read_masked_video

    separator.require_vision()  # before decoding anything
    frames = math.ceil(seconds * separator.sample_rate / separator.hop) + 1
    return read_masked_video(video, frames, separator.hop, separator.sample_rate,
                             read_mask(mask) if mask else None, mask_marks,
                             size=separator.model.vision_encoder.config.image_size)
