"""Files of pretrained models inside pinned wheels (DeepFilterNet3, GE2E, Silero VAD), read only when they are the
exact file samstream was tested with: a wheel reinstalled at another version gets a clear error naming the fix,
not a model that quietly behaves differently."""

from __future__ import annotations

import hashlib
from pathlib import Path

from samstream.model.errors import ModelLoadError


def read_pinned(path: Path, sha256: str, what: str, reinstall: str) -> bytes:
    """The bytes of `path` when its SHA-256 is `sha256`; else a ModelLoadError that names `what` the file should
    be and ends with `reinstall` (the command that restores it)."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ModelLoadError(f"cannot read {what} {path}: {error}; {reinstall}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ModelLoadError(f"{path} is not {what} samstream was tested with (SHA-256 {digest}, expected "
                             f"{sha256}): {reinstall}")
    return data
