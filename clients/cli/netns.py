"""Run a command in a private network namespace: loopback plus one veth pair with a private address.

WebRTC peers never use 127.0.0.1 (aioice skips it; Chromium needs a flag), so both peers of a benchmark or
test gather the address below instead: nothing is sent to this machine's real interface addresses. Both
ends of the veth pair stay inside the namespace, so nothing can leave it, not even along its default route:
that route is there because Firefox offers only the default route's address to a page that has not been
granted the microphone (one that plays an audio file), and no address at all without one. A dummy interface
would do as well, but some kernels have no dummy driver; veth works everywhere unshare does. Needs root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

ADDRESS = "10.213.0.1"
MARKER = "SAMSTREAM_NETNS"  # set inside a namespace made here: its value is the address

SETUP = (
    "set -e; ip link set lo up; "
    "ip link add sam0 type veth peer name sam1; "
    f"ip addr add {ADDRESS}/24 dev sam0; "
    "ip link set sam1 up; ip link set sam0 up; ip route add default dev sam0; "
    'exec "$@"'
)


def unavailable() -> str | None:
    """Why a private network namespace cannot be made here, or None."""
    missing = [tool for tool in ("unshare", "ip") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found (install util-linux and iproute2)"
    if os.geteuid() != 0:
        return "making a private network namespace needs root (unshare --net)"
    return None


def inside() -> bool:
    """Whether this process runs in a namespace made by `isolated_command`."""
    return os.environ.get(MARKER) == ADDRESS


def isolated_command(argv: list[str]) -> list[str]:
    why = unavailable()
    if why is not None:
        raise RuntimeError(why)
    return ["unshare", "--net", "env", f"{MARKER}={ADDRESS}", "sh", "-c", SETUP, "sh", *argv]


def run_isolated(argv: list[str], timeout_s: float, capture: bool = True,
                 nice: int | None = None) -> subprocess.CompletedProcess:
    """Run argv (e.g. [sys.executable, script, ...]) inside a fresh namespace; `nice`: its scheduling priority
    (negative: ahead of the machine's other work, as real-time audio runs; root may lower it)."""
    command = isolated_command(argv)
    if nice is not None:
        command = ["nice", "-n", str(nice), *command]
    return subprocess.run(command, capture_output=capture, text=True, timeout=timeout_s)


def python_isolated(script: str, *args: str, timeout_s: float = 90.0, nice: int | None = None
                    ) -> subprocess.CompletedProcess:
    return run_isolated([sys.executable, script, *args], timeout_s, nice=nice)
