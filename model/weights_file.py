"""Networks trained here, on disk: a safetensors file of the weights and `<stem>.json` beside it holding the
network's config (under "config") and what training adds (arch, step, CPU time, ...).

One place for the three kinds (the general DiT, the mask networks, the baseline), so that each reads and writes
the same layout and a missing, unreadable or mismatched file gets the same clear error.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Callable, TypeVar

from torch import nn

from samstream.model.errors import ModelLoadError

Network = TypeVar("Network", bound=nn.Module)
Config = TypeVar("Config")


def save_weights(model: nn.Module, path: str | Path, info: dict) -> None:
    """The weights at `path` and `info` (which holds the config) as `<stem>.json` beside them."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    path.with_suffix(".json").write_text(json.dumps(info, indent=1))


def load_weights(path: str | Path, what: str, build: Callable[[dict], Network], missing_hint: str = "") -> Network:
    """The network `build(config)` makes from the .json's "config", with the weights at `path` loaded, in eval
    mode. `what` names the network in errors ("the mask network"); `missing_hint` says how to get the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    config_path = path.with_suffix(".json")
    if not path.is_file() or not config_path.is_file():
        raise ModelLoadError(f"{what} weights {path} (with its config {config_path.name}) not found{missing_hint}")
    try:
        config = json.loads(config_path.read_text())["config"]
        state = load_file(str(path))
    except (SafetensorError, json.JSONDecodeError, KeyError, OSError) as error:
        raise ModelLoadError(f"cannot read {what} {path}: {error}") from None
    model = build(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ModelLoadError(f"{path} does not fit its config: {error}") from None
    return model.eval()


def config_from_dict(cls: type[Config], values: dict, what: str) -> Config:
    """A config dataclass from a saved dict, refusing keys it does not know (a file of another code version)."""
    unknown = sorted(set(values) - {f.name for f in fields(cls)})
    if unknown:
        raise ModelLoadError(f"unknown {what} config keys {unknown}")
    return cls(**values)
