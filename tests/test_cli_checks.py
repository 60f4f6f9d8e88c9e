"""The command line checks its arguments before it loads a model (clients/cli/checks.py): wrong paths, empty
prompts, unusable output directories, unknown models, busy ports and missing devices are said at once and
clearly; outputs default to separated/NAME/ as demucs does; `python -m samstream` runs the CLI."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import soundfile

from samstream.clients import cli
from samstream.clients.cli import checks, mic
from samstream.model.errors import UserFacingError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_model_load(monkeypatch):
    """Loading a model is a test failure: every check must come first."""
    import samstream.model.registry as registry

    def refuse(*args, **kwargs):
        pytest.fail("a model was loaded before the arguments were checked")

    monkeypatch.setattr(registry, "load_separator", refuse)
    monkeypatch.setattr(mic, "make_processor", refuse)


@pytest.fixture
def wav(tmp_path) -> Path:
    path = tmp_path / "song.wav"
    soundfile.write(path, np.zeros(1600, np.float32), 16000)
    return path


def error_of(capsys, argv: list[str]) -> str:
    assert cli.main(argv) == 2
    return capsys.readouterr().err


def test_separate_refuses_bad_arguments_before_the_model_loads(no_model_load, wav, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("a file")
    assert "-o " + str(taken) + " is a file" in error_of(capsys, ["separate", str(wav), "--prompt", "x", "-o", str(taken)])
    assert "is a directory, not an audio file" in error_of(capsys, ["separate", str(tmp_path), "--prompt", "x"])
    assert "does not exist" in error_of(capsys, ["separate", str(tmp_path / "missing.wav"), "--prompt", "x"])
    assert "--prompt is empty" in error_of(capsys, ["separate", str(wav), "--prompt", "  "])
    message = error_of(capsys, ["separate", str(wav), "--prompt", "x", "--model", "nonexistent"])
    assert "no model named 'nonexistent'" in message and "'tiny'" in message
    assert "%|" not in message and "Loading" not in message  # no stray progress bars
    assert "does not exist" in error_of(capsys, ["separate", str(wav), "--prompt", "x", "--model", "./nowhere/m"])


def test_stream_refuses_bad_arguments_before_connecting(wav, tmp_path, capsys):
    assert "is a directory" in error_of(capsys, ["stream", str(tmp_path), "--prompt", "x"])
    assert "--prompt is empty" in error_of(capsys, ["stream", str(wav), "--prompt", ""])
    assert "give the server's address" in error_of(capsys, ["stream", str(wav), "--prompt", "x", "--server",
                                                            "ftp://127.0.0.1:1"])


def test_server_addresses():
    assert checks.server_url("http://127.0.0.1:8765") == "ws://127.0.0.1:8765/"  # the page's address works too
    assert checks.server_url("https://example.org/") == "wss://example.org/"
    assert checks.server_url("ws://[::1]:8765/?token=t") == "ws://[::1]:8765/?token=t"
    assert checks.server_url("127.0.0.1:8765") == "ws://127.0.0.1:8765/"
    with pytest.raises(UserFacingError):
        checks.server_url("http://")


def test_output_defaults_to_separated_name(monkeypatch, tmp_path, wav):
    monkeypatch.chdir(tmp_path)
    assert checks.output_dir(None, wav) == Path("separated") / "song"
    assert checks.output_dir("out/deeper", wav) == Path("out/deeper")  # created later, when there is output
    assert not (tmp_path / "out").exists()


async def test_stream_accepts_the_page_address_and_writes_to_separated(processor, wav, tmp_path, monkeypatch, capsys):
    import asyncio

    from test_ws_protocol import running_server

    monkeypatch.chdir(tmp_path)
    async with running_server(processor) as server:
        code = await asyncio.to_thread(cli.main, ["stream", str(wav), "--span", "+:0-0.05", "--server",
                                                  f"http://127.0.0.1:{server.port}"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "separated" / "song" / "target.wav").is_file()
    assert (tmp_path / "separated" / "song" / "residual.wav").is_file()


async def test_stream_resamples_an_enrollment_clip_to_the_input_rate(processor, tmp_path, capsys):
    """`stream --enroll` takes a clip at any rate (as `mic --enroll` does): an 8 kHz clip gives the same output as
    the same clip resampled to the input's 16 kHz beforehand."""
    import asyncio

    from fixtures.signals import tonal_mixture
    from test_ws_protocol import running_server

    from samstream.model.polyphase import polyphase_resample

    soundfile.write(tmp_path / "in.wav", tonal_mixture(0.5, 16000, seed=3), 16000, subtype="FLOAT")
    clip = tonal_mixture(1.0, 8000, seed=4)
    soundfile.write(tmp_path / "clip8k.wav", clip, 8000, subtype="FLOAT")
    soundfile.write(tmp_path / "clip16k.wav", polyphase_resample(clip, 8000, 16000), 16000, subtype="FLOAT")
    async with running_server(processor) as server:
        for name in ("clip8k", "clip16k"):
            code = await asyncio.to_thread(cli.main, ["stream", str(tmp_path / "in.wav"), "--enroll",
                                                      str(tmp_path / f"{name}.wav"), "-o", str(tmp_path / name),
                                                      "--server", f"ws://127.0.0.1:{server.port}"])
            assert code == 0, capsys.readouterr().err
    for part in ("target", "residual"):
        resampled_here, _ = soundfile.read(tmp_path / "clip8k" / f"{part}.wav", dtype="float32")
        resampled_before, _ = soundfile.read(tmp_path / "clip16k" / f"{part}.wav", dtype="float32")
        np.testing.assert_array_equal(resampled_here, resampled_before)


def test_mic_reports_a_missing_device_before_loading_a_model(no_model_load, capsys):
    message = error_of(capsys, ["mic", "--input", "no such card", "--prompt", "x", "--seconds", "1"])
    assert "no input device 'no such card'" in message and "--list-devices" in message


def test_serve_refuses_an_unknown_model_before_loading(no_model_load, capsys):
    message = error_of(capsys, ["serve", "--model", "nonexistent", "--port", "0"])
    assert "no model named 'nonexistent'" in message and "'random'" in message


def test_python_m_samstream_runs_the_command_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "samstream", "--help"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0 and "separate" in done.stdout and "serve" in done.stdout
    done = subprocess.run([sys.executable, "-m", "samstream", "separate", "--prompt", "x", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and "is a directory" in done.stderr


def test_every_package_is_installed():
    """A wheel (not only the editable install) carries every folder with an __init__.py, and `python -m
    samstream` finds its __main__ in the `samstream` package."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = config["package-dir"]
    listed = set(config["packages"])
    for name, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            if "__pycache__" in parts or "root" in parts and name != "samstream":
                continue
            package = ".".join((name, *parts))
            if package.startswith("samstream.clients.cli.root"):
                continue  # the `samstream` package itself, mapped on its own
            assert package in listed, f"{package} is missing from pyproject's packages"
    assert (ROOT / mapping["samstream"] / "__main__.py").is_file()
