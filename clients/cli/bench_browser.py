"""The browser client (clients/web) in a headless browser: the browser leg of `samstream bench e2e`, and
the driver of the browser end-to-end tests (tests/fixtures/browser_scenario.py).

Two browsers, one small interface (`BrowserPage`): Debian's Chromium through Playwright, and Debian's
Firefox ESR through Marionette (Playwright drives only its own patched Firefox build, which cannot be
downloaded here). Firefox plays audio, and so runs a page's AudioContext, only through a sound server:
it gets a private PulseAudio with a null sink, paced by the system clock. None of this is installed by
the plain install: `bash install.sh test` adds it, and `unavailable(browser)` says what is missing.

The sound the page sends: Chromium's fake microphone plays a WAV file (it loops it); Firefox's fake
microphone is only a tone, so there the page plays the WAV through its "audio file instead of the
microphone" input. The page records, on its AudioContext clock, that input and what it hears
(`samstream.startRecording()` / `samstream.stopRecordingBase64()`). With the mix at "original" what it
hears is its own input (target + residual), delayed by the whole round trip, which
`round_trip_delays` finds by cross-correlation.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BROWSERS = ("chromium", "firefox")
CHROMIUM = Path("/usr/bin/chromium")
FIREFOX = Path("/usr/bin/firefox-esr")
VIEWPORT = {"width": 1360, "height": 900}
SHOWN = ("status", "m-latency", "m-rtf", "m-level", "m-time", "prompt-now", "prompt-understood", "mix-label", "error")

# Marionette's own profile already switches off updates, telemetry and first-run pages.
FIREFOX_PREFS = {
    # nothing beyond this machine: remote settings (experiments, blocklists) was the one lookup left; a
    # release build reads this pref only with MOZ_REMOTE_SETTINGS_DEVTOOLS=1 in its environment
    "services.settings.server": "data:,#remote-settings-dummy/v1",
    # a fake microphone (a tone), granted without asking; media may play without a click
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    "media.autoplay.default": 0,
    # real addresses in ICE candidates, not mDNS names (aiortc would have to resolve them by multicast)
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    # Firefox offers addresses beyond the default route's only to pages allowed the microphone
    "permissions.default.microphone": 1,
    "network.proxy.type": 0,
}


def chromium_args(microphone: Path | None) -> list[str]:
    args = [
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        # nothing beyond this machine: no name resolves (autofill, sign-in and updater lookups were left), and
        # no mDNS responder for WebRTC host names (it joined the mDNS multicast group on the network)
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
    ]
    if microphone is not None:
        args.append(f"--use-file-for-fake-audio-capture={microphone}")
    return args


def installed(module: str) -> bool:
    """Whether the Python package `module` can be imported here."""
    return importlib.util.find_spec(module) is not None


def unavailable(browser: str) -> str | None:
    """Why `browser` cannot run here, saying what to install; None when it can."""
    if browser == "chromium":
        if not installed("playwright"):
            return "playwright is not installed: run bash install.sh test"
        if not CHROMIUM.is_file():
            return f"{CHROMIUM} is missing (Debian's chromium): run bash install.sh test"
        return None
    if browser == "firefox":
        if not installed("marionette_driver"):
            return "marionette-driver is not installed: run bash install.sh test"
        if not FIREFOX.is_file():
            return f"{FIREFOX} is missing (Debian's firefox-esr): run bash install.sh test"
        if shutil.which("pulseaudio") is None:
            return "pulseaudio is missing (Firefox's sound server): run bash install.sh test"
        return None
    raise ValueError(f"unknown browser {browser!r}: use {', '.join(BROWSERS)}")


class BrowserPage:
    """One tab of a headless browser. `call(function, *args)` runs a JavaScript function (source text,
    e.g. "(spans) => samstream.start({prompt: {spans}})") in the page and returns its awaited result."""

    name: str
    version: str
    console: list[str]  # console errors and uncaught page errors, where the driver can see them

    async def goto(self, url: str) -> None:
        raise NotImplementedError

    async def call(self, function: str, *args: Any) -> Any:
        raise NotImplementedError

    async def choose_file(self, element_id: str, path: Path) -> None:
        """Pick `path` in the page's <input type=file id=element_id>, as a user would."""
        raise NotImplementedError

    async def screenshot(self, path: Path) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def wait_for(self, function: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not await self.call(function):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: {function} still false after {timeout_s:g} s")
            await asyncio.sleep(0.2)

    async def shown(self) -> dict[str, str]:
        """What the page shows: status, live metrics, prompt, mix and error lines."""
        return await self.call(
            "(ids) => Object.fromEntries(ids.map((id) => [id, document.getElementById(id).innerText]))", list(SHOWN))


class ChromiumPage(BrowserPage):
    name = "chromium"

    def __init__(self, playwright, browser, page) -> None:
        self._playwright, self._browser, self._page = playwright, browser, page
        self.version = browser.version
        self.console: list[str] = []
        page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: self.console.append(f"pageerror: {error}"))

    @classmethod
    async def launch(cls, microphone: Path | None) -> ChromiumPage:
        from playwright.async_api import async_playwright

        playwright = await async_playwright().start()
        try:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                                       args=chromium_args(microphone))
            return cls(playwright, browser, await browser.new_page(viewport=VIEWPORT))
        except BaseException:
            await playwright.stop()
            raise

    async def goto(self, url: str) -> None:
        await self._page.goto(url)

    async def call(self, function: str, *args: Any) -> Any:
        return await self._page.evaluate(f"(args) => ({function})(...args)", list(args))

    async def choose_file(self, element_id: str, path: Path) -> None:
        await self._page.set_input_files(f"#{element_id}", str(path))

    async def screenshot(self, path: Path) -> None:
        await self._page.screenshot(path=str(path))

    async def close(self) -> None:
        await self._browser.close()
        await self._playwright.stop()


class SoundServer:
    """A private PulseAudio server whose only sink is a null sink, for a headless Firefox on a machine without
    a sound card. Without one the page's AudioContext never starts; Firefox's mock audio device
    (media.cubeb.force_mock_context) starts it, but its clock ran 4-25 % off real time, which the WebRTC
    jitter buffer then stretches and squeezes. The null sink is paced by the system clock."""

    def __init__(self, directory: Path, process: subprocess.Popen) -> None:
        self.directory, self.process = directory, process
        self.address = f"unix:{directory / 'native'}"  # for PULSE_SERVER

    @classmethod
    def start(cls, log: Path) -> SoundServer:
        directory = Path(tempfile.mkdtemp(prefix="samstream-pulse-"))  # short: a socket path has ~100 bytes
        with open(log, "wb") as stderr:
            process = subprocess.Popen(
                ["pulseaudio", "--daemonize=no", "--use-pid-file=no", "--system=false", "--exit-idle-time=-1",
                 "--disable-shm=yes", "-n", "--load=module-null-sink sink_name=null rate=48000",
                 f"--load=module-native-protocol-unix socket={directory / 'native'} auth-anonymous=1"],
                env={**os.environ, "HOME": str(directory), "XDG_RUNTIME_DIR": str(directory)},
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        server = cls(directory, process)
        deadline = time.monotonic() + 10
        while not (directory / "native").exists():
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"PulseAudio did not start for Firefox (log: {log})")
            time.sleep(0.05)
        return server

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


class FirefoxPage(BrowserPage):
    """Marionette's client is synchronous: each command runs in a worker thread, off the event loop."""

    name = "firefox"

    def __init__(self, client, sound: SoundServer) -> None:
        self._client, self._sound = client, sound
        self.version = client.session_capabilities.get("browserVersion", "?")
        self.console: list[str] = []  # Marionette does not relay the console: the page reports its own errors

    @classmethod
    async def launch(cls, log_dir: Path) -> FirefoxPage:
        from marionette_driver.marionette import Marionette

        logging.getLogger("mozversion").setLevel(logging.WARNING)  # else 13 lines of Firefox build details
        sound = await asyncio.to_thread(SoundServer.start, log_dir / "pulseaudio.log")
        # Marionette starts Firefox (in its constructor) with a copy of this process's environment: the only
        # way to give Firefox variables.
        environment = {"PULSE_SERVER": sound.address, "MOZ_REMOTE_SETTINGS_DEVTOOLS": "1"}
        os.environ.update(environment)
        try:
            # port 0: a free port, so that runs in parallel do not collide on Marionette's default 2828
            client = await asyncio.to_thread(Marionette, bin=str(FIREFOX), headless=True, port=0, prefs=FIREFOX_PREFS,
                                             startup_timeout=60, gecko_log=str(log_dir / "firefox.log"))
        except BaseException:
            sound.stop()
            raise
        finally:
            for name in environment:
                del os.environ[name]
        try:
            await asyncio.to_thread(client.start_session)
            await asyncio.to_thread(client.set_window_rect, width=VIEWPORT["width"], height=VIEWPORT["height"])
            client.timeout.script = client.timeout.page_load = 60
        except BaseException:
            await asyncio.to_thread(client.cleanup)
            sound.stop()
            raise
        return cls(client, sound)

    async def goto(self, url: str) -> None:
        await asyncio.to_thread(self._client.navigate, url)

    async def call(self, function: str, *args: Any) -> Any:
        # sandbox=None: run in the page's own scope, where the page's globals (window.samstream) live
        return await asyncio.to_thread(self._client.execute_script, f"return ({function})(...arguments)",
                                       script_args=list(args), sandbox=None)

    async def choose_file(self, element_id: str, path: Path) -> None:
        element = await asyncio.to_thread(self._client.find_element, "id", element_id)
        await asyncio.to_thread(element.send_keys, str(path))

    async def screenshot(self, path: Path) -> None:
        png = await asyncio.to_thread(self._client.screenshot, format="binary")
        path.write_bytes(png)

    async def close(self) -> None:
        try:
            await asyncio.to_thread(self._client.cleanup)
        finally:
            self._sound.stop()


async def launch(browser: str, *, audio: Path | None = None, log_dir: Path | None = None) -> BrowserPage:
    """A headless `browser` ("chromium" or "firefox"). Chromium's fake microphone plays `audio` (a 48 kHz
    WAV); Firefox's plays a tone (give the page the file with `choose_file`). `log_dir` keeps Firefox's logs."""
    why = unavailable(browser)
    if why is not None:
        raise RuntimeError(why)
    if browser == "chromium":
        return await ChromiumPage.launch(audio)
    return await FirefoxPage.launch(log_dir or Path("."))


# ---------------------------------------------------------------------------------------- the page's audio


def decode(data: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(data), dtype="<f4").copy()


async def record(page: BrowserPage, seconds: float) -> dict[str, Any]:
    """`seconds` of the page's input and of what it hears, sample-aligned on its AudioContext clock."""
    await page.call("() => samstream.startRecording()")
    await asyncio.sleep(seconds)
    recording = await page.call("() => samstream.stopRecordingBase64()")
    return {"rate": recording["sampleRate"], "input": decode(recording["input"]), "output": decode(recording["output"])}


def best_lag(signal: np.ndarray, reference: np.ndarray, max_lag: int) -> int:
    """The lag d in [0, max_lag] where signal[d : d + len(reference)] best matches reference: the largest
    normalised cross-correlation (computed with FFTs)."""
    signal = signal.astype(np.float64)
    reference = reference.astype(np.float64)
    width = len(reference)
    n = max_lag + width
    signal = np.pad(signal, (0, max(0, n - len(signal))))  # a reference running past the end meets silence
    size = 1 << (n + width).bit_length()
    spectrum = np.fft.rfft(signal[:n], size) * np.conj(np.fft.rfft(reference, size))
    correlation = np.fft.irfft(spectrum, size)[: max_lag + 1]
    energy = np.concatenate([[0.0], np.cumsum(signal[:n] ** 2)])
    local = energy[width : width + max_lag + 1] - energy[: max_lag + 1]
    return int(np.argmax(correlation / np.sqrt(np.maximum(local, 1e-12))))


def round_trip_delays(sent: np.ndarray, heard: np.ndarray, rate: int, window_s: float = 0.25,
                      max_delay_s: float = 1.0) -> np.ndarray:
    """The delay (samples) of `heard` behind `sent`, both recorded on one clock, per `window_s` of `heard`
    (from `max_delay_s` on): the jitter buffers of the network and the browser move it a little."""
    search, width = round(max_delay_s * rate), round(window_s * rate)
    delays = []
    for start in range(search, len(heard) - width + 1, width):
        candidates = sent[start - search : start + width]
        delays.append(search - best_lag(candidates, heard[start : start + width], search))
    return np.array(delays, dtype=np.int64)


# ---------------------------------------------------------------------------------------- the bench leg


async def measure_round_trip(browser: str, url: str, audio: np.ndarray, seconds: float, work_dir: Path,
                             spans: list) -> dict:
    """The browser leg of `samstream bench e2e`: the page at `url` sends
    `audio` (float32 mono 48 kHz, longer than the run) and hears it back at "original"; returns the browser,
    its input and the round trip's p50/p95 over `seconds` of audio."""
    import soundfile as sf

    wav = work_dir / "input.wav"
    sf.write(wav, audio, 48000, subtype="PCM_16")
    page = await launch(browser, audio=wav, log_dir=work_dir)
    source = "microphone" if browser == "chromium" else "file"  # Firefox's fake microphone is a tone
    try:
        await page.goto(url)
        if source == "file":
            await page.choose_file("source-file", wav)
        await page.call("() => samstream.setMix(50)")  # "original": target + residual, from the first sample
        answer = await page.call("(spans) => samstream.start({prompt: {spans}, sampleRate: 48000})", spans)
        if answer is None:
            state = await page.call("() => samstream.state()")
            raise RuntimeError(f"{browser}: the page did not start: {json.dumps(state['errors'])}")
        await page.wait_for("() => samstream.state().metrics && samstream.state().metrics.stream_s > 1.0", 30)
        recording = await record(page, seconds)
        await page.call("() => samstream.stop()")
    finally:
        await page.close()
    rate = recording["rate"]
    delays_ms = 1000.0 * round_trip_delays(recording["input"], recording["output"], rate) / rate
    return {"name": page.name, "version": page.version, "input": source,
            "latency_ms_p50": round(float(np.percentile(delays_ms, 50)), 2),
            "latency_ms_p95": round(float(np.percentile(delays_ms, 95)), 2), "windows": len(delays_ms)}
