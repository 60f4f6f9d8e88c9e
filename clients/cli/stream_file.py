"""`samstream stream IN --prompt TEXT [--span +:3.2-4.0] [-o DIR] [--server ws://127.0.0.1:8765] [--realtime]
[--live] [--strict]`: stream a file through a running server and write target.wav and residual.wav (to
separated/NAME/ unless -o says where).

The outputs have the input's length and line up with it: the server's output sample n is the separation
of input sample n - L (L = latency_samples, reported in `started`), so the first L samples (pre-roll) are
dropped and the flushed tail supplies the last L.

Pacing. A file has no clock to keep up with, so the stream is declared "as_fast_as_possible": the server
never degrades it and slows the sender down instead (flow control), and the result equals `samstream
separate` of the same file. `--realtime` sends at the audio's own pace (as a live source would), still
undegraded; `--live` declares the stream live, as a microphone is: the server may then degrade it when it
falls behind. Any degradation is reported on stderr with the seconds affected; `--strict` makes it an error
(exit status 3, the files are still written).
"""

from __future__ import annotations

import argparse

from samstream.model.anchors import parse_span


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="audio file (wav, flac, ogg, ...); multi-channel input is downmixed")
    parser.add_argument("-o", "--output", help="directory for target.wav and residual.wav (default: separated/NAME/, "
                                                "NAME being the input's file name without its extension)")
    parser.add_argument("--prompt", help='what to extract, e.g. "dog barking"')
    parser.add_argument("--span", action="append", type=parse_span, default=[], metavar="SIGN:START-END",
                        help="time-span prompt in seconds: +:3.2-4.0 (this sound) or --span=-:7-8 (not this); "
                             "repeatable")
    parser.add_argument("--example", "--enroll", dest="example", metavar="FILE",
                        help="audio file (any rate) of the sound or voice to extract: the prompt's audio example (the "
                             "default model serves a voice with its voice picker where installed)")
    parser.add_argument("--server", default="ws://127.0.0.1:8765",
                        help="server address: ws://HOST:PORT, or the http:// address `samstream serve` prints")
    parser.add_argument("--token", help="access token, if the server requires one (or SAMSTREAM_TOKEN)")
    parser.add_argument("--realtime", action="store_true",
                        help="send frames at the audio's own speed (default: as fast as the server computes)")
    parser.add_argument("--live", action="store_true",
                        help="declare the stream live (pacing \"live\", as a microphone): the server may degrade it "
                             "when compute falls behind; default: \"as_fast_as_possible\", never degraded")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 3 when any part of the output was degraded")
    parser.add_argument("--frame-ms", type=float, default=20.0, help="audio per frame sent")
    parser.add_argument("--format", choices=["pcm16", "float32"], default="float32", help="PCM on the wire")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


async def stream_file(client, audio, rate: int, frame: int, realtime: bool, window_s: float = 2.0):
    """Send `audio` in frames; returns the outputs [2, len(audio) + L] (target, residual) and `end`.

    Without `realtime`, at most `window_s` of audio is in flight; the server's flow control does the rest (it
    stops reading while the session's backlog is full)."""
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


def degradation_warning(degraded_s: dict, total_s: float, live: bool) -> str | None:
    """The warning for a stream the server degraded (fewer steps, pass-through of the mixture), or None."""
    affected = sum(degraded_s.values())
    if affected <= 0:
        return None
    parts = ", ".join(f"{name.replace('_', ' ')} {seconds:.2f} s" for name, seconds in degraded_s.items() if seconds)
    why = ("the server fell behind real time for this live stream; without --live it would have waited instead"
           if live else "the server degraded a stream declared as_fast_as_possible (does it speak pacing?)")
    return f"warning: {affected:.2f} s of the {total_s:.2f} s were degraded ({parts}): {why}"


def run(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import os
    import sys
    import time

    import numpy as np

    from samstream.clients.cli import checks
    from samstream.clients.cli.mic import read_enrollment
    from samstream.clients.ws_client import SeparationClient, ServerError
    from samstream.model.audio import read_audio, write_audio
    from samstream.model.errors import PromptError, UserFacingError

    if checks.prompt_text(args.prompt) is None and not args.span and args.example is None:
        raise PromptError("give a prompt: --prompt TEXT, --span +:START-END and/or --example FILE")
    server = checks.server_url(args.server)
    out = checks.output_dir(args.output, checks.input_file(args.input))
    audio, rate = read_audio(args.input)
    mono = audio.mean(axis=0).astype(np.float32)
    # The protocol takes the example at the stream's rate: a clip at another rate is resampled, as `mic` does.
    example = read_enrollment(checks.input_file(args.example), rate) if args.example is not None else None
    frame = max(1, round(args.frame_ms * rate / 1000))
    pacing = "live" if args.live else "as_fast_as_possible"
    token = args.token or os.environ.get("SAMSTREAM_TOKEN")

    async def session():
        try:
            client = await SeparationClient.connect(server, token=token)
        except (OSError, TimeoutError) as error:
            raise UserFacingError(f"cannot reach the server at {server} ({error or type(error).__name__}): start "
                                  "it with `samstream serve`") from None
        async with client:
            started = await client.start(rate, args.prompt, args.span, example, format=args.format, outputs="both",
                                         pacing=pacing)
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
    out.mkdir(parents=True, exist_ok=True)
    write_audio(out / "target.wav", aligned[0], rate)
    write_audio(out / "residual.wav", aligned[1], rate)
    summary = {"target": str(out / "target.wav"), "residual": str(out / "residual.wav"), "sample_rate": rate,
               "samples": len(mono), "latency_samples": latency, "latency_ms": started["latency_ms"],
               "session": started["session"], "seconds": round(elapsed, 3),
               "speed": round(len(mono) / rate / elapsed, 2), "pacing": pacing,
               "degraded_s": end["metrics"]["degraded_s"]}
    print(f"wrote {summary['target']} and {summary['residual']} ({len(mono)} samples at {rate} Hz, "
          f"latency {started['latency_ms']:.1f} ms, {summary['speed']}x real time)")
    warning = degradation_warning(summary["degraded_s"], len(mono) / rate, args.live)
    if warning is not None:
        print(f"samstream stream: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    return 3 if warning is not None and args.strict else 0
