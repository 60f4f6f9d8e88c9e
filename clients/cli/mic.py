"""`samstream mic [--list-devices] [--input DEV] [--output DEV] [--server ws://...] [--prompt TEXT] [--record FILE] [--seconds S]`."""

from __future__ import annotations

import argparse
import json

from samstream.model.anchors import parse_span
from samstream.model.errors import PromptError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--list-devices", action="store_true", help="list audio devices and exit")
    parser.add_argument("--input", metavar="DEV", help="input device: index or part of its name (default: system default)")
    parser.add_argument("--output", metavar="DEV", help="output device: index or part of its name (default: system default)")
    parser.add_argument("--server", metavar="URL",
                        help="separate on a samstream server (ws://host:port/); default: in this process")
    parser.add_argument("--token", help="the server's access token (or SAMSTREAM_TOKEN)")
    parser.add_argument("--prompt", help='what to extract, e.g. "man speaking"')
    parser.add_argument("--span", action="append", type=parse_span, default=[], metavar="SIGN:START-END",
                        help="time-span prompt in stream seconds: +:1.0-2.5 (this sound) or --span=-:4-5 (not this)")
    parser.add_argument("--enroll", metavar="FILE",
                        help="a clip (any rate) of the voice to keep: the prompt's audio example (the default model "
                             "serves it with its voice picker where installed, else its general network)")
    parser.add_argument("--no-speech-expert", action="store_true",
                        help="in-process default model: its own networks alone, without the DeepFilterNet3 speech expert")
    parser.add_argument("--hear", choices=["target", "residual", "mixture"], default="target",
                        help="what the speakers play (default: target)")
    parser.add_argument("--record", metavar="FILE",
                        help="write target and residual as a 2-channel float WAV (without --output: no playback)")
    parser.add_argument("--seconds", type=float, help="stop after this many seconds of input (default: Ctrl-C)")
    parser.add_argument("--rate", type=int, default=48000, help="device sample rate (default: 48000)")
    parser.add_argument("--block-ms", type=float, default=20.0, help="audio block size (default: 20 ms)")
    parser.add_argument("--model", default="tiny",
                        help="in-process model: 'tiny', a SAM Audio checkpoint directory, or a .safetensors file "
                             "saved by `samstream train`")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for the in-process model (default 1)")
    parser.add_argument("--quiet", action="store_true", help="no level meter")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def make_processor(model: str, speech_expert: bool = True):
    from samstream.stream.regimes import make_processor as engine_processor

    if model.endswith(".safetensors"):
        from samstream.model.embedded import load_embedded
        from samstream.stream.regimes.block_causal import BlockCausalProcessor

        return BlockCausalProcessor(load_embedded(model))
    return engine_processor(model, speech_expert=speech_expert)


def read_enrollment(path, rate: int):
    """An enrollment (audio example) clip file as float32 mono at `rate`: downmixed, resampled if need be."""
    from samstream.model.audio import read_audio
    from samstream.model.polyphase import polyphase_resample

    clip, clip_rate = read_audio(path)
    return polyphase_resample(clip.mean(0), clip_rate, rate)


def run(args: argparse.Namespace) -> int:
    import os

    from samstream.clients.mic import (
        InProcessBackend, MicOptions, ServerBackend, check_devices, import_sounddevice, list_devices, run_mic,
    )

    sd = import_sounddevice()
    if args.list_devices:
        print(list_devices(sd))
        return 0
    from samstream.clients.cli import checks

    if checks.prompt_text(args.prompt) is None and not args.span and args.enroll is None:
        raise PromptError("give a prompt: --prompt TEXT, --span +:START-END and/or --enroll FILE")
    if args.seconds is not None and args.seconds <= 0:
        raise PromptError(f"--seconds must be positive, got {args.seconds}")
    options = MicOptions(
        sample_rate=args.rate, block=max(1, round(args.block_ms * args.rate / 1000)), seconds=args.seconds,
        input_device=args.input, output_device=args.output, play=args.output is not None or args.record is None,
        record=args.record, hear=args.hear, meter=not args.quiet,
    )
    if not args.server:
        checks.model_name(args.model, extra=(".safetensors",))
    if args.enroll:
        checks.input_file(args.enroll)
    check_devices(sd, options)  # before loading a model or connecting: a missing microphone is said at once
    if args.server:
        from samstream.clients.ws_client import prompt_message

        example = read_enrollment(args.enroll, args.rate) if args.enroll else None
        prompt = prompt_message(args.prompt, args.span, example, "float32")
        backend = ServerBackend(checks.server_url(args.server), args.rate, prompt,
                                args.token or os.environ.get("SAMSTREAM_TOKEN"))
    else:
        import torch

        from samstream.stream.processor import Prompt

        torch.set_num_threads(args.threads)
        processor = make_processor(args.model, not args.no_speech_expert)
        example = read_enrollment(args.enroll, processor.sample_rate) if args.enroll else None
        backend = InProcessBackend(processor, args.rate, Prompt(text=args.prompt, spans=tuple(args.span), example=example))
    try:
        result = run_mic(backend, options, sd)
    finally:
        backend.close()
    summary = {
        "samples_in": result.samples_in, "samples_out": result.samples_out, "sample_rate": args.rate,
        "latency_samples": result.latency_samples, "latency_ms": 1000.0 * result.latency_samples / args.rate,
        "wall_s": round(result.wall_s, 3), "overflows": result.overflows, "rtf": result.metrics.get("rtf"),
        "record": args.record,
    }
    print(f"separated {result.samples_in / args.rate:.2f} s of input; latency {summary['latency_ms']:.1f} ms"
          + (f"; wrote {args.record}" if args.record else "")
          + (f"; {result.overflows} input overflows (audio was lost: try a larger --block-ms)" if result.overflows else ""))
    if args.json:
        print(json.dumps(summary))
    return 0
