"""`samstream data fetch|index|render|build-eval`: build the training and evaluation data.

Training-time only; every heavy import stays inside the handlers so `samstream --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from samstream.model.training.common import default_cache_dir


def _cache_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache", "--data", dest="cache", type=Path, default=None,
                        help="data cache folder (default: $SAMSTREAM_DATA or ~/.cache/samstream/data)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="STEP")

    p = sub.add_parser("fetch", help="apt-get download + unpack the allowed packages; install render tools")
    _cache_arg(p)
    p.add_argument("--no-tools", action="store_true", help="do not apt-get install the TTS/soundfont tools")
    p.add_argument("--packages", nargs="+", default=None, help="only these packages (default: all allowed)")
    p.set_defaults(_data_run=_run_fetch)

    p = sub.add_parser("index", help="decode catalogued audio to 16 kHz FLAC stems; write DIR/index.json")
    _cache_arg(p)
    p.add_argument("--workers", type=int, default=2, help="decoding processes (default 2)")
    p.set_defaults(_data_run=_run_index)

    p = sub.add_parser("render", help="render TTS speech, soundfont instruments and procedural sounds")
    _cache_arg(p)
    p.add_argument("--minutes", type=float, default=30.0,
                   help="training minutes per rendered class (held-out renders get a quarter; default 30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="rendering processes (default 2)")
    p.add_argument("--only", choices=("tts", "instruments", "procedural"), nargs="+", default=None,
                   help="render only these families")
    p.add_argument("--variety", choices=("v1", "v2"), default="v1",
                   help="v2: realistic-variety procedural sounds (engines, sirens, bells, rings, water) and instrument "
                        "renders (all programs, styles, synth effects) into new folders next to v1's (default v1)")
    p.set_defaults(_data_run=_run_render)

    p = sub.add_parser("build-eval", help="write an evaluation set (held-out sources by default)")
    p.add_argument("out", type=Path, help="output folder (one sub-folder per item)")
    _cache_arg(p)
    p.add_argument("--n-per-class", type=int, default=10, help="items per class (default 10)")
    p.add_argument("--voice-pairs", type=int, default=30, help="'pick one voice out of two' items (default 30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seconds", type=float, default=6.0, help="item length (default 6)")
    p.add_argument("--in-distribution", action="store_true",
                   help="use training sources with fresh seeds instead of held-out sources")
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    p.set_defaults(_data_run=_run_build_eval)

    p = sub.add_parser("build-voice-eval", help="voice-pick items of held-out voices by pair type (overlapping "
                                                "voices of different / the same gender, turn-taking)")
    p.add_argument("out", type=Path, help="output folder (one sub-folder per item)")
    _cache_arg(p)
    p.add_argument("--per-type", type=int, default=20, help="items per pair type (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seconds", type=float, default=6.0, help="item length (default 6)")
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--real-voices", action="store_true",
                   help="only recorded voices, no TTS (a voice of unknown gender takes it from its median pitch; a "
                        "pair type these voices cannot make is left out, and both are listed in the manifest)")
    p.add_argument("--noise-db", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
                   help="a held-out non-speech sound under every pair, LOW..HIGH dB against the speech "
                        "(default: none)")
    p.set_defaults(_data_run=_run_build_voice_eval)

    p = sub.add_parser("speech-pool", help="add shards of mixtures with the speech expert's estimate to a folder "
                                           "(speech classes: the speech refiner's training data; every class: the "
                                           "general separator's, as the default model feeds it)")
    p.add_argument("--out", type=Path, required=True, help="pool folder (e.g. cache/speech_pool)")
    _cache_arg(p)
    p.add_argument("--shards", type=int, default=100, help="shards to add (64 examples of 4 s each; default 100)")
    p.add_argument("--targets", choices=["speech", "general"], default="speech",
                   help="speech: speech-class mixtures (`samstream train --task speech`); general: every class "
                        "(`samstream train --task general --pool`) (default speech)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(_data_run=_run_speech_pool)

    p = sub.add_parser("pack", help="a compact training-data pack (train split, Opus) for a GPU burst")
    p.add_argument("out", type=Path, help="pack folder (e.g. cache/pack)")
    _cache_arg(p)
    p.add_argument("--max-mb", type=float, default=48.0,
                   help="size budget of the whole pack in MiB (default 48: with the code and wheels it must "
                        "stay under the 64 MiB a device run carries)")
    p.add_argument("--kbps", type=float, default=24.0, help="Opus bitrate (default 24)")
    p.add_argument("--clip-seconds", type=float, default=12.0,
                   help="longer recordings are cut to one window of this length (default 12)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="encoding processes (default 1)")
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    p.set_defaults(_data_run=_run_pack)

    p = sub.add_parser("unpack", help="decode a pack to 16-bit WAV stems (fast to read) for training")
    p.add_argument("pack", type=Path, help="a folder written by `samstream data pack`")
    p.add_argument("out", type=Path, help="the decoded cache folder (pass it to `samstream train --data`)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding processes (default: all cores)")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    p.set_defaults(_data_run=_run_unpack)


def _finish(args, summary: dict, text_lines: list[str]) -> None:
    for line in text_lines:
        print(line)
    if args.json:
        print(json.dumps(summary))


def _run_fetch(args, cache_dir: Path) -> int:
    from samstream.model.training.fetch import fetch
    from samstream.model.training.packages import DATA_PACKAGES

    report = fetch(cache_dir, packages=tuple(args.packages or DATA_PACKAGES), tools=not args.no_tools)
    summary = {"cache": str(cache_dir), "downloaded": report.downloaded, "unpacked": report.unpacked,
               "skipped": report.skipped, "failed": report.failed, "tools_installed": report.tools_installed}
    lines = [f"fetch: {len(report.unpacked)} unpacked, {len(report.skipped)} already there, "
             f"{len(report.failed)} failed -> {cache_dir / 'unpacked'}"]
    lines += [f"  failed {name}: {why}" for name, why in report.failed.items()]
    _finish(args, summary, lines)
    return 1 if report.failed else 0


def _run_index(args, cache_dir: Path) -> int:
    from samstream.model.training.index import build_index, summarize

    index, dropped = build_index(cache_dir, workers=args.workers)
    table = summarize(index["entries"])
    lines = [f"index: {len(index['entries'])} stems -> {cache_dir / 'index.json'} ({len(dropped)} dropped)"]
    lines += [f"  dropped {why}" for why in dropped[:20]]
    lines += _table_lines(table)
    _finish(args, {"cache": str(cache_dir), "entries": len(index["entries"]), "dropped": dropped,
                   "classes": table}, lines)
    return 0


def _run_render(args, cache_dir: Path) -> int:
    from samstream.model.training.index import summarize, write_index
    from samstream.model.training.render import RenderConfig, render

    only = set(args.only or (("instruments", "procedural") if args.variety == "v2" else ("tts", "instruments", "procedural")))
    config = RenderConfig(minutes=args.minutes, seed=args.seed, workers=args.workers, tts="tts" in only,
                          instruments="instruments" in only, procedural="procedural" in only, variety=args.variety)
    entries = render(cache_dir, config)
    index = write_index(cache_dir)
    table = summarize(entries)
    lines = [f"render ({args.variety}): {len(entries)} stems, {sum(e['duration'] for e in entries) / 60:.1f} min -> "
             f"{cache_dir / 'stems' / '_rendered'}; index now {len(index['entries'])} stems"]
    lines += _table_lines(table)
    _finish(args, {"cache": str(cache_dir), "variety": args.variety, "rendered": len(entries), "classes": table}, lines)
    return 0


def _run_build_eval(args, cache_dir: Path) -> int:
    from dataclasses import replace

    from samstream.model.training.build_eval import EVAL_CONFIG, build_eval

    manifest = build_eval(cache_dir, args.out, n_per_class=args.n_per_class, seed=args.seed,
                          in_distribution=args.in_distribution, voice_pairs=args.voice_pairs, force=args.force,
                          config=replace(EVAL_CONFIG, seconds=args.seconds))
    lines = [f"build-eval: {manifest['items']} items ({manifest['split']} sources) -> {args.out}"]
    lines += [f"  {cls:<16} {n:>4}" for cls, n in manifest["per_class"].items()]
    _finish(args, {"out": str(args.out), **manifest}, lines)
    return 0


def _run_build_voice_eval(args, cache_dir: Path) -> int:
    from samstream.model.training.voices import build_voice_eval

    manifest = build_voice_eval(cache_dir, args.out, per_type=args.per_type, seed=args.seed, seconds=args.seconds,
                                force=args.force, real_voices=args.real_voices, noise_db=args.noise_db)
    lines = [f"build-voice-eval: {manifest['items']} items from {manifest['speakers']} held-out voices -> {args.out}"]
    lines += [f"  {kind:<22} {n:>4}" for kind, n in manifest["per_pair_type"].items()]
    if manifest.get("genders_by_pitch"):
        lines.append(f"  gender from median pitch: {len(manifest['genders_by_pitch'])} voices")
    lines += [f"  {kind}: left out (these voices cannot make it)" for kind in manifest.get("pair_types_left_out", [])]
    _finish(args, {"out": str(args.out), **manifest}, lines)
    return 0


def _run_speech_pool(args, cache_dir: Path) -> int:
    from samstream.model.training.speech_pool import SpeechPoolConfig, write_pool

    total = write_pool(cache_dir, args.out, args.shards, SpeechPoolConfig(targets=args.targets), seed=args.seed)
    _finish(args, {"out": str(args.out), "shards": total}, [f"speech-pool: {total} shards in {args.out}"])
    return 0


def _run_pack(args, cache_dir: Path) -> int:
    from samstream.model.training.pack import PackConfig, build_pack

    config = PackConfig(max_mb=args.max_mb, kbps=args.kbps, clip_seconds=args.clip_seconds, seed=args.seed,
                        workers=args.workers)
    summary = build_pack(cache_dir, args.out, config, force=args.force)["pack"]
    lines = [f"pack: {summary['clips']} clips, {summary['minutes']:.1f} min of audio "
             f"(of {summary['train_minutes_available']:.0f} train min), {summary['speakers']} speakers, "
             f"{summary['bytes'] / 2**20:.2f} MiB in {summary['files']} files -> {args.out}"]
    lines += [f"  note: {note}" for note in summary["notes"]]
    lines.append(f"  {'class':<16} {'clips':>6} {'min':>7} {'real min':>8}")
    for cls, cell in summary["classes"].items():
        lines.append(f"  {cls:<16} {cell['files']:>6} {cell['minutes']:>7.2f} {cell['real_minutes']:>8.2f}")
    _finish(args, {"out": str(args.out), **summary}, lines)
    return 0


def _run_unpack(args, cache_dir: Path) -> int:
    from samstream.model.training.pack import folder_bytes, unpack

    index = unpack(args.pack, args.out, workers=args.workers)
    size, _ = folder_bytes(args.out)
    minutes = sum(e["duration"] for e in index["entries"]) / 60
    _finish(args, {"out": str(args.out), "entries": len(index["entries"]), "minutes": round(minutes, 2),
                   "bytes": size},
            [f"unpack: {len(index['entries'])} stems, {minutes:.1f} min, {size / 2**20:.0f} MiB -> {args.out}"])
    return 0


def _table_lines(table: dict) -> list[str]:
    lines = [f"  {'class':<16} {'train files':>11} {'train min':>9} {'held files':>10} {'held min':>8}"]
    for cls, per_split in table.items():
        t, h = per_split.get("train", {}), per_split.get("heldout", {})
        lines.append(f"  {cls:<16} {t.get('files', 0):>11} {t.get('minutes', 0):>9.2f} "
                     f"{h.get('files', 0):>10} {h.get('minutes', 0):>8.2f}")
    return lines


def run(args) -> int:
    cache_dir = (getattr(args, "cache", None) or default_cache_dir()).expanduser()
    return args._data_run(args, cache_dir)
