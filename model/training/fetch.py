"""`samstream data fetch`: download the allowed Debian packages and unpack their audio into the cache.

Layout: DIR/debs/*.deb (kept, so re-unpacking needs no network), DIR/unpacked/<pkg>/ (only audio
files, soundfonts and the copyright file are kept; the rest of a game is graphics we never read),
DIR/unpacked/gcompris-qt-data/rcc/<bundle>/... (audio pulled out of Qt resource bundles).
Idempotent: a package whose folder exists is skipped, and a folder appears only once complete.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from samstream.model.training.common import DataError
from samstream.model.training.packages import DATA_PACKAGES, RESERVED_NAME_PARTS, SYNTH_TOOL_PACKAGES
from samstream.model.training.rcc import extract_rcc_audio

AUDIO_EXTENSIONS = (".ogg", ".oga", ".mp3", ".wav", ".flac", ".opus", ".au", ".aiff", ".aif", ".sf2")


@dataclass
class FetchReport:
    downloaded: list[str] = field(default_factory=list)
    unpacked: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    tools_installed: bool = False


def _require(tool: str, hint: str) -> None:
    if shutil.which(tool) is None:
        raise DataError(f"`{tool}` not found: {hint}")


def find_deb(debs_dir: Path, package: str) -> Path | None:
    matches = sorted(debs_dir.glob(f"{package}_*.deb"))
    return matches[-1] if matches else None


def download(package: str, debs_dir: Path) -> Path:
    """apt-get download into debs_dir (skipped when the .deb is already there)."""
    existing = find_deb(debs_dir, package)
    if existing:
        return existing
    result = subprocess.run(["apt-get", "download", "-q", package], cwd=debs_dir,
                            capture_output=True, text=True)
    deb = find_deb(debs_dir, package)
    if result.returncode != 0 or deb is None:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise DataError(f"apt-get download {package} failed: {' | '.join(tail)} "
                        "(run `apt-get update` as root, then retry)")
    return deb


def prune_to_audio(root: Path) -> None:
    """Delete everything but audio, soundfonts and copyright files (Qt bundles are extracted before),
    and the reserved files that allowed packages carry (the Black Pearl drum kit)."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            path = Path(dirpath) / name
            keep = name.lower().endswith(AUDIO_EXTENSIONS) or name == "copyright"
            keep = keep and not any(part in name.lower() for part in RESERVED_NAME_PARTS)
            if not keep or path.is_symlink():
                path.unlink()
        if not os.listdir(dirpath) and Path(dirpath) != root:
            os.rmdir(dirpath)


def unpack(deb: Path, package: str, unpacked_dir: Path) -> Path:
    """dpkg-deb -x into a temporary folder, pull audio out of .rcc bundles, prune, then rename."""
    target = unpacked_dir / package
    work = Path(tempfile.mkdtemp(prefix=f".{package}.", dir=unpacked_dir))
    try:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(work)], check=True, capture_output=True)
        for bundle in sorted(work.rglob("*.rcc")):
            extract_rcc_audio(bundle, work / "rcc" / bundle.stem)
        prune_to_audio(work)
        os.replace(work, target)
    except subprocess.CalledProcessError as error:
        raise DataError(f"dpkg-deb -x {deb.name} failed: {error.stderr.decode(errors='replace').strip()} "
                        f"(delete {deb} and run `samstream data fetch` again)") from error
    finally:
        if work.exists():
            shutil.rmtree(work)
    return target


def installed(package: str) -> bool:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return result.returncode == 0 and "install ok installed" in result.stdout


def install_synth_tools() -> bool:
    """apt-get install the TTS and soundfont tools render needs; returns True when something was installed."""
    missing = [p for p in SYNTH_TOOL_PACKAGES if not installed(p)]
    if not missing:
        return False
    if os.geteuid() != 0:
        raise DataError("installing the rendering tools needs root: run as root, or "
                        f"`sudo apt-get install {' '.join(missing)}`, or pass --no-tools")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    result = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise DataError(f"apt-get install of {' '.join(missing)} failed: "
                        f"{result.stderr.strip().splitlines()[-1:]} (run `apt-get update` first)")
    return True


def fetch(cache_dir: Path, packages=DATA_PACKAGES, tools: bool = True) -> FetchReport:
    _require("apt-get", "data fetch needs a Debian/Ubuntu system with apt")
    _require("dpkg-deb", "data fetch needs dpkg")
    debs_dir, unpacked_dir = cache_dir / "debs", cache_dir / "unpacked"
    debs_dir.mkdir(parents=True, exist_ok=True)
    unpacked_dir.mkdir(parents=True, exist_ok=True)
    report = FetchReport()
    if tools:
        report.tools_installed = install_synth_tools()
    bar = tqdm(packages, desc="fetch", unit="pkg", file=sys.stderr)
    for package in bar:
        bar.set_postfix_str(package)
        if (unpacked_dir / package).is_dir():
            report.skipped.append(package)
            continue
        try:
            had_deb = find_deb(debs_dir, package) is not None
            deb = download(package, debs_dir)
            if not had_deb:
                report.downloaded.append(package)
            unpack(deb, package, unpacked_dir)
            report.unpacked.append(package)
        except DataError as error:
            report.failed[package] = str(error)
            tqdm.write(f"fetch: {error}", file=sys.stderr)
    return report
