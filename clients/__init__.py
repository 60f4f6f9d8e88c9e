"""The top floor (DESIGN.md): what users run. The command line (cli/), the Python WebSocket, WebRTC and
microphone clients, and the browser client (web/, served by `samstream serve`)."""

from __future__ import annotations

from pathlib import Path


def browser_client_dir() -> Path | None:
    """The browser client shipped with the package (clients/web), if this build has it."""
    folder = Path(__file__).resolve().parent / "web"
    return folder if folder.is_dir() else None


def not_separated_note(understood: dict | None) -> str | None:
    """What a client tells its user when the default model returns the prompt's input unseparated (`understood`,
    docs/protocol.md: a class whose calibrated floor is 1, where the network scored below the mixture); None
    otherwise."""
    if not understood or understood.get("mask_floor") != 1.0:
        return None
    return (f"note: the default model does not separate {understood['class']!r}: the target is the input (less any "
            "speech the speech expert finds), as it scored below the mixture on that class (docs/model_card.md, "
            '"Never confidently wrong")')
