"""Read audio out of Qt `.rcc` resource bundles (gcompris-qt-data keeps its sounds in them).

Format: "qres" magic, version, then offsets of the tree, data and name tables (DATA_EXTRA appendix).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

AUDIO_SUFFIXES = (".ogg", ".wav", ".mp3", ".flac", ".aac", ".opus", ".m4a")


def iter_rcc_audio(path: Path):
    """Yield (inner path without leading slash, bytes) for every audio entry of one bundle."""
    blob = Path(path).read_bytes()
    if blob[:4] != b"qres":
        raise ValueError(f"{path} is not a Qt resource bundle (no 'qres' magic)")
    version, tree, data, names = struct.unpack(">IIII", blob[4:20])
    node_size = 14 if version == 1 else 22

    def name_at(offset: int) -> str:
        o = names + offset
        length = struct.unpack(">H", blob[o:o + 2])[0]
        return blob[o + 6:o + 6 + 2 * length].decode("utf-16-be")

    stack = [(0, "")]
    while stack:
        index, prefix = stack.pop()
        o = tree + index * node_size
        name_offset, flags = struct.unpack(">IH", blob[o:o + 6])
        name = name_at(name_offset) if index else ""
        if flags & 2:  # directory: children are a contiguous run of nodes
            count, first = struct.unpack(">II", blob[o + 6:o + 14])
            child_prefix = f"{prefix}/{name}" if name else prefix
            stack.extend((c, child_prefix) for c in range(first, first + count))
            continue
        inner = f"{prefix}/{name}".lstrip("/")
        if not inner.lower().endswith(AUDIO_SUFFIXES):
            continue
        data_offset = struct.unpack(">I", blob[o + 10:o + 14])[0]
        p = data + data_offset
        size = struct.unpack(">I", blob[p:p + 4])[0]
        payload = blob[p + 4:p + 4 + size]
        if flags & 1:  # zlib, with a 4-byte uncompressed-size prefix
            payload = zlib.decompress(payload[4:])
        elif flags & 4:
            raise ValueError(f"{path}: zstd-compressed entry {inner} (not supported; none seen in gcompris)")
        yield inner, payload


def extract_rcc_audio(path: Path, out_dir: Path) -> int:
    """Write every audio entry of one bundle under out_dir; returns how many were written."""
    count = 0
    for inner, payload in iter_rcc_audio(path):
        dst = Path(out_dir) / inner
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(payload)
        count += 1
    return count
