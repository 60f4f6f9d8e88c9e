"""Checks the commands run on their arguments before they load a model (which takes seconds): a wrong path,
an empty prompt, an unusable output directory or a model name that cannot exist is reported at once, with
what to do instead."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from samstream.model.errors import AudioInputError, ModelLoadError, PromptError, UserFacingError

OUTPUT_ROOT = Path("separated")  # like demucs: separated/NAME/target.wav, separated/NAME/residual.wav
BUILT_IN_MODELS = ("tiny",)


def input_file(path: str) -> Path:
    """An audio file to read: it exists and is a file."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise AudioInputError(f"{file} is a directory, not an audio file: give a file (wav, flac, ogg, mp3, ...)")
    if not file.exists():
        raise AudioInputError(f"audio file {file} does not exist")
    if not os.access(file, os.R_OK):
        raise AudioInputError(f"audio file {file} is not readable (permissions)")
    return file


def output_dir(option: str | None, input_path: str | os.PathLike) -> Path:
    """The directory for target.wav and residual.wav: `-o DIR`, or separated/NAME/ (NAME: the input's name
    without its extension). It may not exist yet, but it must be creatable: checked now, not after the model ran."""
    out = Path(option).expanduser() if option is not None else OUTPUT_ROOT / Path(input_path).stem
    if out.exists() and not out.is_dir():
        raise UserFacingError(f"-o {out} is a file: give a directory for target.wav and residual.wav "
                              "(it is created if needed)")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserFacingError(f"cannot create {out}: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserFacingError(f"cannot write to {parent} (permissions): choose another -o directory")
    return out


def prompt_text(text: str | None) -> str | None:
    """A text prompt: None (not given) or non-empty."""
    if text is not None and not text.strip():
        raise PromptError("--prompt is empty: say what to extract, e.g. --prompt \"dog barking\"")
    return text


def model_name(name: str, extra: tuple[str, ...] = ()) -> str:
    """A --model value that can exist: a built-in name (and `extra` ones), a directory, or a Hugging Face id."""
    if name in BUILT_IN_MODELS or name in extra:
        return name
    path = Path(name).expanduser()
    if path.is_dir():
        return name
    if path.exists():
        if path.suffix == ".safetensors" and ".safetensors" in extra:
            return name
        raise ModelLoadError(f"--model {name} is a file; pass the directory that holds config.json and "
                             "checkpoint.pt, or 'tiny' for the default model")
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return name  # a Hugging Face id: fetched when the model loads
    choices = " or ".join(repr(n) for n in (*BUILT_IN_MODELS, *(e for e in extra if not e.startswith("."))))
    what = f"model directory {name} does not exist" if "/" in name or name.startswith((".", "~")) \
        else f"no model named {name!r}"
    raise ModelLoadError(f"{what}: --model takes {choices} ('tiny' is the default model), a SAM Audio checkpoint "
                         "directory (config.json + checkpoint.pt), or a Hugging Face id (owner/name)")


def server_url(url: str) -> str:
    """A server address as a WebSocket URL: ws:// and wss:// as given; http:// and https:// (the address the
    server prints for its page, on the same port) become ws:// and wss://; a bare host:port gets ws://."""
    if "://" not in url:
        url = "ws://" + url
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise UserFacingError(f"--server {url}: give the server's address as ws://HOST:PORT (or http://HOST:PORT)")
    return urlunsplit((scheme, parts.netloc, parts.path or "/", parts.query, ""))
