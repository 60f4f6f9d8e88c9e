"""fetch: unpacking keeps audio only (and drops reserved files), pulls audio out of .rcc bundles, is idempotent."""

import subprocess

from samstream.model.training.fetch import fetch, unpack
from test_data_catalogue import _rcc_bundle


def _build_deb(tmp_path, name="toy-sounds"):
    root = tmp_path / "pkgroot"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: toy\n")
    sounds = root / "usr/share/games/toy/sounds"
    sounds.mkdir(parents=True)
    (sounds / "bark.ogg").write_bytes(b"OggS audio")
    (sounds / "sprite.png").write_bytes(b"\x89PNG")
    (root / "usr/share/sounds/sf2").mkdir(parents=True)
    (root / "usr/share/sounds/sf2/Black_Pearl_4_LV2.sf2").write_bytes(b"reserved kit")
    (root / "usr/share/sounds/sf2/Red_Zeppelin_4_LV2.sf2").write_bytes(b"allowed kit")
    (root / "usr/share/toy").mkdir(parents=True)
    (root / "usr/share/toy/instruments.rcc").write_bytes(_rcc_bundle({"piano.ogg": b"OggS piano"}))
    debs = tmp_path / "cache/debs"
    debs.mkdir(parents=True)
    deb = debs / f"{name}_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(root), str(deb)], check=True, capture_output=True)
    return deb


def test_unpack_keeps_audio_and_extracts_rcc(tmp_path):
    deb = _build_deb(tmp_path)
    (tmp_path / "unpacked").mkdir()
    root = unpack(deb, "toy-sounds", tmp_path / "unpacked")
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == ["rcc/instruments/res/piano.ogg", "usr/share/games/toy/sounds/bark.ogg",
                     "usr/share/sounds/sf2/Red_Zeppelin_4_LV2.sf2"]
    assert not list((tmp_path / "unpacked").glob(".toy-sounds.*"))  # no half-unpacked leftovers


def test_fetch_is_idempotent_and_reports_unknown_packages(tmp_path):
    _build_deb(tmp_path)
    cache = tmp_path / "cache"
    first = fetch(cache, packages=("toy-sounds",), tools=False)  # the .deb is already there: no download
    assert first.unpacked == ["toy-sounds"] and not first.failed
    marker = cache / "unpacked/toy-sounds/usr/share/games/toy/sounds/bark.ogg"
    mtime = marker.stat().st_mtime_ns
    second = fetch(cache, packages=("toy-sounds", "no-such-package-samstream-test"), tools=False)
    assert second.skipped == ["toy-sounds"] and marker.stat().st_mtime_ns == mtime
    assert "no-such-package-samstream-test" in second.failed
    assert "apt-get" in second.failed["no-such-package-samstream-test"]
