"""Browser demo: a samstream server with the browser client; open the printed address.

    python demos/browser.py            # then open http://127.0.0.1:8765/ (add ?video=1 for a video call)

The page sends your microphone over WebRTC and plays back the separated sound: type what to isolate,
hold "this sound" / "not this" while a sound plays, "Enroll this voice" while someone speaks, move
the slider between target, original and residual; spectrograms and latency/RTF are live.
(`samstream serve` does the same once its WebRTC hook is on; this script also opens the browser.)
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import webbrowser

from common import add_server_arguments, start_server


async def serve(args: argparse.Namespace) -> None:
    server, url = await start_server(args.model, args.port)
    page = f"http://127.0.0.1:{server.port}/" + ("?video=1" if args.video else "")
    print(f"serving {page}  (Ctrl-C stops)")
    if not args.no_browser:
        webbrowser.open(page)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await server.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_arguments(parser)
    parser.set_defaults(port=8765)
    parser.add_argument("--video", action="store_true", help="open the video-call view (camera too)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")
    args = parser.parse_args(argv)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
