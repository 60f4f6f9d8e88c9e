"""The `samstream` command line.

Each subcommand lives in its own module that defines `add_arguments(parser)` and `run(args) -> int`.
The modules are imported only when needed, and keep their heavy imports (torch, servers, training
code) inside `run`, so `samstream --help` stays fast and the serving path never imports training code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from samstream.model.errors import UserFacingError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "separate": ("samstream.stream.commands.separate", "separate an audio file offline (target + residual)"),
    "bench": ("samstream.stream.commands.bench", "measure speed and memory (prints figures; --json for JSON)"),
    "serve": ("samstream.stream.commands.serve", "live separation server: WebSocket protocol, /health, /metrics"),
    "stream": ("samstream.stream.commands.stream_file", "stream a file through a running server (target + residual)"),
    "mic": ("samstream.stream.commands.mic", "microphone -> separation (in process or via a server) -> speakers/file"),
    "data": ("samstream.model.training.cli_data", "fetch, index and render training data; build evaluation sets"),
    "eval": ("samstream.model.training.evaluate", "SI-SDR improvement of a model on an evaluation directory"),
    "train": ("samstream.model.training.cli_train", "train (or resume) the embedded model or the baseline"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="samstream", description="Real-time prompt-driven audio separation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except UserFacingError as error:
        print(f"samstream {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
