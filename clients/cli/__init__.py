"""The `samstream` command line: the top floor (DESIGN.md), the user's front door to servers, clients,
benchmarks and training, so it lives above the engine (samstream.stream) and the separators (samstream.model).

Each subcommand lives in its own module that defines `add_arguments(parser)` and `run(args) -> int`: this
package for the serving, client and benchmark commands, model/training for `data`, `eval` and `train`.
Only the module of the command being run is imported (all of them for the top-level help), and modules
keep their heavy imports (torch, servers) inside `run`, so `samstream --help` stays fast and
`samstream serve` never imports training code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from samstream.model.errors import UserFacingError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "separate": ("samstream.clients.cli.separate", "separate an audio file offline (target + residual)"),
    "judge": ("samstream.clients.cli.judge", "score a separation with the SAM Audio Judge (no reference needed)"),
    "bench": ("samstream.clients.cli.bench", "measure speed and memory (prints figures; --json for JSON)"),
    "serve": ("samstream.clients.cli.serve", "live separation server: WebSocket protocol, /health, /metrics"),
    "stream": ("samstream.clients.cli.stream_file", "stream a file through a running server (target + residual)"),
    "mic": ("samstream.clients.cli.mic", "microphone -> separation (in process or via a server) -> speakers/file"),
    "data": ("samstream.model.training.cli_data", "fetch, index and render training data; build evaluation sets"),
    "eval": ("samstream.model.training.evaluate", "SI-SDR improvement of a model on an evaluation directory"),
    "calibrate": ("samstream.model.training.calibrate",
                  "calibrate the default model's per-class mask floors on an evaluation set"),
    "train": ("samstream.model.training.cli_train", "train (or resume) the embedded model or the baseline"),
    "curves": ("samstream.model.training.curves", "held-out learning curves of training runs per CPU minute (SVG + table)"),
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv`: every command is listed, but only the one `argv` names gets its arguments
    (and its module imported); with no known command in `argv` (help, a typo) every command gets them."""
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((word for word in argv if not word.startswith("-")), None)
    parser = argparse.ArgumentParser(prog="samstream", description="Real-time prompt-driven audio separation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if chosen in COMMANDS and name != chosen:
            continue
        module = importlib.import_module(module_name)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except UserFacingError as error:
        print(f"samstream {args.command}: error: {error}", file=sys.stderr)
        return 2

