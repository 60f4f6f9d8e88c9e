"""WebSocket stream: play a file through a samstream server in real time, watch latency and RTF live.

    python demos/websocket_stream.py demos/audio/tone_and_noise.flac --span +:0.5-1.5 -o ws_out

Opens a session with `start` (PCM16 at the file's rate), sends 20 ms frames at the audio's own pace,
receives one frame of (target, residual) per frame sent, prints the server's periodic metrics, then
`flush`es for the last L samples. Writes OUT/target.wav and OUT/residual.wav aligned with the input
(the first L = latency samples of the stream are its pre-roll).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np

from common import ROOT, add_server_arguments, start_server


async def run(args: argparse.Namespace) -> dict:
    import soundfile as sf

    from samstream.clients.ws_client import SeparationClient

    audio, rate = sf.read(args.input, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    server, url = (None, args.server) if args.server else await start_server(args.model, args.port)
    frame = round(rate * args.frame_ms / 1000)
    targets, residuals = [], []
    async with await SeparationClient.connect(url) as client:
        started = await client.start(rate, text=args.prompt, spans=args.span, metrics_interval_s=0.5)
        latency = started["latency_samples"]
        print(f"session {started['session']}: {rate} Hz, latency {started['latency_ms']:.0f} ms "
              f"({latency} samples), model {started['model']}")

        async def receive(count: int) -> None:
            for _ in range(count):
                output = await client.receive_audio()
                targets.append(output.target)
                residuals.append(output.residual)

        frames = [audio[i : i + frame] for i in range(0, len(audio), frame)]
        receiver = asyncio.create_task(receive(len(frames)))
        begin = time.monotonic()
        for index, pcm in enumerate(frames):
            await asyncio.sleep(max(0.0, begin + index * frame / rate - time.monotonic()))  # real-time pace
            await client.send_audio(pcm)
            metrics = client.last_metrics
            if metrics and index % max(1, round(0.25 * rate / frame)) == 0:  # a status line four times a second
                print(f"\r{index * frame / rate:6.2f} s  latency {metrics['latency_ms']:.0f} ms  RTF {metrics['rtf']:.2f}"
                      f"  in flight {client.in_flight:3d}  level {metrics['level']}", end="", flush=True)
        await receiver
        end = await client.flush()
        tail = await client.receive_audio()
        targets.append(tail.target)
        residuals.append(tail.residual)
        print()
    if server is not None:
        await server.shutdown()
    target = np.concatenate(targets)[latency:]
    residual = np.concatenate(residuals)[latency:]
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    sf.write(out / "target.wav", target, rate)
    sf.write(out / "residual.wav", residual, rate)
    summary = {"samples": len(target), "input_samples": len(audio), "latency_samples": latency,
               "rtf": end["metrics"]["rtf"], "files": [str(out / "target.wav"), str(out / "residual.wav")]}
    print(f"wrote {summary['files'][0]} and {summary['files'][1]} ({len(target)} samples, as many as the input)")
    return summary


def main(argv: list[str] | None = None) -> int:
    from samstream.model.anchors import parse_span

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", nargs="?", default=str(ROOT / "demos" / "audio" / "tone_and_noise.flac"))
    parser.add_argument("--prompt", help='text prompt, e.g. "a steady tone"')
    parser.add_argument("--span", action="append", type=parse_span, default=[], metavar="SIGN:START-END",
                        help="time-span prompt, e.g. +:0.5-1.5 (default when no prompt is given)")
    parser.add_argument("--frame-ms", type=float, default=20.0, help="audio per WebSocket frame")
    parser.add_argument("-o", "--output", default="websocket_stream_out", help="output folder")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    add_server_arguments(parser)
    args = parser.parse_args(argv)
    if args.prompt is None and not args.span:
        args.span = [("+", 0.5, 1.5)]
    summary = asyncio.run(run(args))
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
