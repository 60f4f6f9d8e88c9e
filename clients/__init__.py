"""The top floor (DESIGN.md): what users run. The command line (cli/), the Python WebSocket, WebRTC and
microphone clients, and the browser client (web/, served by `samstream serve`)."""

from __future__ import annotations

from pathlib import Path


def browser_client_dir() -> Path | None:
    """The browser client shipped with the package (clients/web), if this build has it."""
    folder = Path(__file__).resolve().parent / "web"
    return folder if folder.is_dir() else None
