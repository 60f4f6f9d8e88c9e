#!/usr/bin/env bash
# Idempotent set-up of a fresh Debian 12 / Python 3.11 machine for samstream.
#   bash install.sh          runtime: system libraries + .venv with samstream installed
#   bash install.sh test     the same, plus what the test suite needs
# Re-running is cheap: each step is skipped when its stamp matches the inputs it was built from.
set -euo pipefail
cd "$(dirname "$0")"
want_test=0
[ "${1:-}" = "test" ] && want_test=1

apt_pkgs=(libsndfile1 libportaudio2)
# The browser end-to-end tests drive Debian's chromium and firefox-esr (never a downloaded browser) inside
# a private network namespace (iproute2, util-linux); headless Firefox plays audio only through a sound
# server, so it gets a private PulseAudio with a null sink (pulseaudio).
[ $want_test = 1 ] && apt_pkgs+=(chromium firefox-esr pulseaudio iproute2 util-linux)
# Real recordings for the quality tests of the default model: read speech (pocketsphinx-testdata, ~2 MB) and
# everyday sounds (sound-theme-freedesktop); tests never download anything themselves.
[ $want_test = 1 ] && apt_pkgs+=(pocketsphinx-testdata sound-theme-freedesktop)
missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install.sh: apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3.11 -m venv .venv
extras="t5"
# The tests run a local Ray cluster (tests/test_ray_serve.py): Ray Serve comes with `test` only (extra `ray`).
[ $want_test = 1 ] && extras="t5,test,train,ray"
stamp="$(cat pyproject.toml | sha1sum | cut -c1-12)-$extras"
if [ "$(cat .venv/.install-stamp 2>/dev/null)" != "$stamp" ]; then
  echo "install.sh: installing Python packages ($extras)"
  .venv/bin/pip install -q --disable-pip-version-check -e ".[$extras]"
  echo "$stamp" > .venv/.install-stamp
fi
# The speaker encoder reads the weights inside the resemblyzer wheel and never imports it: its own dependencies
# (webrtcvad, a source build needing pkg_resources, and librosa) do not install on Python 3.11, hence --no-deps.
if ! .venv/bin/python -c "import importlib.metadata as m; assert m.version('resemblyzer') == '0.1.4'" 2>/dev/null; then
  echo "install.sh: resemblyzer 0.1.4 (weights only, --no-deps)"
  .venv/bin/pip install -q --disable-pip-version-check --no-deps resemblyzer==0.1.4
fi
echo "install.sh: ready (.venv)"
