"""`samstream stream IN --prompt TEXT [--span +:3.2-4.0] -o DIR [--server ws://127.0.0.1:8765] [--realtime]`:
stream a file through a running server and write target.wav and residual.wav.

The outputs have the input's length and line up with it: the server's output sample n is the separation
of input sample n - L (L = latency_samples, reported in `started`), so the first L samples (pre-roll) are
dropped and the flushed tail supplies the last L.
"""

from __future__ import annotations

import argparse

from samstream.model.anchors import parse_span


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="audio file (wav, flac, ogg, ...); multi-channel input is downmixed")
    parser.add_argument("-o", "--output", required=True, help="directory for target.wav and residual.wav")
    parser.add_argument("--prompt", help='what to extract, e.g. "dog barking"')
    parser.add_argument("--span", action="append", type=parse_span, default=[], metavar="SIGN:START-END",
                        help="time-span prompt in seconds: +:3.2-4.0 (this sound) or --span=-:7-8 (not this); "
                             "repeatable")
    parser.add_argument("--example", help="audio file of the sound to extract (an example prompt)")
    parser.add_argument("--server", default="ws://127.0.0.1:8765", help="server URL")
    parser.add_argument("--token", help="access token, if the server requires one (or SAMSTREAM_TOKEN)")
    parser.add_argument("--realtime", action="store_true",
                        help="pace frames at the audio's own speed (default: as fast as the server computes)")
    parser.add_argument("--frame-ms", type=float, default=20.0, help="audio per frame sent")
    parser.add_argument("--format", choices=["pcm16", "float32"], default="float32", help="PCM on the wire")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


async def stream_file(client, audio, rate: int, frame: int, realtime: bool, window_s: float = 0.5):
    """Send `audio` in frames; returns the outputs [2, len(audio) + L] (target, residual) and `end`.

    Without --realtime, at most `window_s` of audio is in flight: the server refuses frames beyond its
    backlog, and a window keeps the connection's queues short."""
    import asyncio
    import time

    import numpy as np

    chunks: list = []

    async def receive() -> None:
        while (output := await client.receive_audio()) is not None:
            chunks.append(output)

    receiver = asyncio.create_task(receive())
    window = max(1, round(window_s * rate / frame))
    start = time.perf_counter()
    try:
        for index, first in enumerate(range(0, len(audio), frame)):
            if realtime:
                await asyncio.sleep(max(0.0, start + first / rate - time.perf_counter()))
            else:
                while client.in_flight >= window and not receiver.done():
                    await asyncio.sleep(0.002)
            await client.send_audio(audio[first : first + frame])
        end = await client.flush()
        await receiver
    finally:
        receiver.cancel()
    target = np.concatenate([c.target for c in chunks]) if chunks else np.zeros(0, np.float32)
    residual = np.concatenate([c.residual for c in chunks]) if chunks else np.zeros(0, np.float32)
    return np.stack([target, residual]), end


def run(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import os
    import time
    from pathlib import Path

    import numpy as np

    from samstream.clients.ws_client import SeparationClient, ServerError
    from samstream.model.audio import read_audio, write_audio
    from samstream.model.errors import AudioInputError, PromptError, UserFacingError

    if args.prompt is None and not args.span and args.example is None:
        raise PromptError("give a prompt: --prompt TEXT, --span +:START-END and/or --example FILE")
    audio, rate = read_audio(args.input)
    mono = audio.mean(axis=0).astype(np.float32)
    example = None
    if args.example is not None:
        example_audio, example_rate = read_audio(args.example)
        if example_rate != rate:
            raise AudioInputError(f"the example is at {example_rate} Hz but the input at {rate} Hz: "
                                  "resample it to the input's rate")
        example = example_audio.mean(axis=0).astype(np.float32)
    frame = max(1, round(args.frame_ms * rate / 1000))
    token = args.token or os.environ.get("SAMSTREAM_TOKEN")

    async def session():
        try:
            client = await SeparationClient.connect(args.server, token=token)
        except OSError as error:
            raise UserFacingError(f"cannot reach the server at {args.server} ({error}): start it with "
                                  "`samstream serve`") from None
        async with client:
            started = await client.start(rate, args.prompt, args.span, example, format=args.format, outputs="both")
            outputs, end = await stream_file(client, mono, rate, frame, args.realtime)
        return started, outputs, end

    began = time.perf_counter()
    try:
        started, outputs, end = asyncio.run(session())
    except ServerError as error:
        raise UserFacingError(f"the server refused: {error}") from None
    elapsed = time.perf_counter() - began
    latency = started["latency_samples"]
    if outputs.shape[1] != len(mono) + latency or end["samples_in"] != len(mono):
        raise UserFacingError(f"the server returned {outputs.shape[1]} samples for {len(mono)} sent "
                              f"(latency {latency}): the stream is incomplete")
    aligned = outputs[:, latency : latency + len(mono)]
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    write_audio(out / "target.wav", aligned[0], rate)
    write_audio(out / "residual.wav", aligned[1], rate)
    summary = {"target": str(out / "target.wav"), "residual": str(out / "residual.wav"), "sample_rate": rate,
               "samples": len(mono), "latency_samples": latency, "latency_ms": started["latency_ms"],
               "session": started["session"], "seconds": round(elapsed, 3),
               "speed": round(len(mono) / rate / elapsed, 2), "degraded_s": end["metrics"]["degraded_s"]}
    print(f"wrote {summary['target']} and {summary['residual']} ({len(mono)} samples at {rate} Hz, "
          f"latency {started['latency_ms']:.1f} ms, {summary['speed']}x real time)")
    if args.json:
        print(json.dumps(summary))
    return 0
