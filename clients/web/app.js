"use strict";
// samstream browser client: microphone (or an audio file) -> WebRTC -> the separated sound back, with prompts,
// a mix slider, spectrograms and live metrics. Plain JavaScript and standard APIs only (Chromium and Firefox),
// no build step.
//
// Signalling: JSON over the server's WebSocket ("samstream.v1"): we send webrtc_offer (with every ICE
// candidate gathered) and get webrtc_answer. Prompt changes and metrics then travel on the data channel
// "control" (message types in samstream/stream/server/webrtc.py).

const $ = (id) => document.getElementById(id);

const params = new URLSearchParams(location.search);
// The WebSocket endpoint: the page's own server (its path "/") unless ?ws=ws://host:port/ says otherwise.
// A server bound beyond loopback needs its token: open the page as /?token=T and it is passed on.
function socketUrl() {
  if (params.get("ws")) return params.get("ws");
  const url = new URL("/", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (params.get("token")) url.searchParams.set("token", params.get("token"));
  return url.href;
}
const PING_EVERY_MS = 10000; // the server closes sockets silent for its idle timeout (30 s by default)

// An AudioWorklet that hands every render quantum of its inputs (mono-mixed) to the page while recording.
// Loaded from a Blob URL so that it works whatever MIME types the static server uses.
const RECORDER_WORKLET = `
class SamstreamRecorder extends AudioWorkletProcessor {
  constructor() {
    super();
    this.recording = false;
    this.port.onmessage = (event) => {
      this.recording = event.data === "start";
      if (!this.recording) this.port.postMessage("stopped");
    };
  }
  process(inputs) {
    if (this.recording) {
      const blocks = inputs.map((channels) => {
        const out = new Float32Array(channels.length ? channels[0].length : 128);
        for (const channel of channels) for (let i = 0; i < channel.length; i++) out[i] += channel[i] / channels.length;
        return out;
      });
      this.port.postMessage(blocks, blocks.map((block) => block.buffer));
    }
    return true;
  }
}
registerProcessor("samstream-recorder", SamstreamRecorder);
`;

const app = {
  status: "idle",
  socket: null,
  pc: null,
  channel: null,
  audio: null, // AudioContext
  input: null, // MediaStream sent to the server: the microphone (and camera), or the audio file being played
  remote: null, // MediaStream
  nodes: {},
  answer: null,
  metrics: null,
  prompt: null,
  errors: [],
  recording: null, // {input: [], output: []} while recording
  recorderStopped: null,
  statsTimer: null,
  pingTimer: null,
  stats: {},
  boxStart: null, // [x, y] where a box drag began, while one is being drawn on the camera picture
  enrollment: null, // {seconds, at_s, source}: the voice enrolled now (from the server's prompt messages)
  enrolling: false, // an "enroll" was sent and its prompt message has not come back yet
};

// ------------------------------------------------------------------------------------------- helpers

function setStatus(status) {
  app.status = status;
  $("status").textContent = status;
  const live = status === "live";
  $("start").disabled = live || status === "connecting";
  $("stop").disabled = !(live || status === "connecting");
  for (const id of ["this-sound", "not-this", "clear-spans", "enroll", "clear-voice", "record", "clear-box"]) $(id).disabled = !live;
  if (!live) {
    $("record").textContent = "Record";
    $("record").classList.remove("recording");
  }
}

function showError(message) {
  app.errors.push(message);
  $("error").textContent = message;
}

function send(message) {
  if (app.channel && app.channel.readyState === "open") app.channel.send(JSON.stringify(message));
}

// Slider 0 (target only) .. 50 (the original: target + residual) .. 100 (residual only).
function gainsFor(value) {
  const x = value / 100;
  return { target: Math.min(1, 2 * (1 - x)), residual: Math.min(1, 2 * x) };
}

function mixLabel(value) {
  if (value == 0) return "target only";
  if (value == 100) return "residual only";
  if (value == 50) return "original (target + residual)";
  const g = gainsFor(value);
  return `target ${Math.round(g.target * 100)}% + residual ${Math.round(g.residual * 100)}%`;
}

function setMix(value) {
  $("mix").value = value;
  $("mix-label").textContent = mixLabel(value);
  send({ type: "output", ...gainsFor(Number(value)) });
}

function promptFromBox() {
  const text = $("prompt").value.trim();
  return text ? { text } : null;
}

function describePrompt(prompt) {
  if (!prompt) return "prompt: —";
  const parts = [];
  if (prompt.text) parts.push(`"${prompt.text}"`);
  for (const [sign, start, end] of prompt.spans || []) {
    const until = end - start > 3600 ? "…" : `${end.toFixed(1)} s`;
    parts.push(`${sign === "+" ? "this" : "not"} ${start.toFixed(1)}–${until}`);
  }
  if (prompt.example_s) parts.push(`voice example ${prompt.example_s.toFixed(1)} s`);
  if (prompt.box) parts.push("the boxed speaker");
  return `prompt: ${parts.join(", ") || "—"}`;
}

function iceGatheringDone(pc, timeoutMs = 5000) {
  // The offer carries every candidate: aiortc (the server) does not trickle.
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

// Ask the browser's Opus encoder for music-grade quality (its default, 32 kbit/s, is tuned for voice calls
// and would mask what the separation does). Chromium reads this from the remote description.
function preferHighQualityOpus(sdp) {
  const match = sdp.match(/a=rtpmap:(\d+) opus\/48000[^\r\n]*/i);
  if (!match) return sdp;
  const pt = match[1];
  const fmtp = new RegExp(`a=fmtp:${pt} ([^\\r\\n]*)`);
  if (fmtp.test(sdp)) {
    return sdp.replace(fmtp, (line, values) =>
      values.includes("maxaveragebitrate") ? line : `a=fmtp:${pt} ${values};maxaveragebitrate=128000`);
  }
  return sdp.replace(match[0], `${match[0]}\r\na=fmtp:${pt} maxaveragebitrate=128000`);
}

function openSocket(url) {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url);
    socket.onopen = () => resolve(socket);
    socket.onerror = () => reject(new Error(`cannot reach the server at ${url}`));
  });
}

// ------------------------------------------------------------------------------------------- start / stop

async function start(options = {}) {
  if (app.status === "live" || app.status === "connecting") return app.answer;
  app.errors = [];
  $("error").textContent = "";
  const prompt = options.prompt || promptFromBox();
  if (!prompt) {
    showError("Type what to isolate (e.g. speech) before starting.");
    return null;
  }
  setStatus("connecting");
  try {
    app.audio = new AudioContext(options.sampleRate ? { sampleRate: options.sampleRate } : {});
    await audioRunning(app.audio);
    const file = options.file || $("source-file").files[0];
    app.input = file ? await playFile(file) : await navigator.mediaDevices.getUserMedia({
      // Raw input: echo cancellation, noise suppression and gain control would reshape the very sounds
      // the separation works on.
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 },
      video: Boolean(options.video ?? params.get("video")),
    });
    $("call").hidden = !app.input.getVideoTracks().length;
    await setUpAudioGraph();
    app.socket = await openSocket(options.socketUrl || socketUrl());
    const answered = waitForAnswer(app.socket);

    const pc = (app.pc = new RTCPeerConnection({ iceServers: options.iceServers || [] }));
    for (const track of app.input.getTracks()) pc.addTrack(track, app.input);
    app.channel = pc.createDataChannel("control");
    app.channel.onmessage = (event) => onControlMessage(JSON.parse(event.data));
    pc.ontrack = onRemoteTrack;
    // A connection can fail before it is live (Firefox fails at once when it finds no address to offer):
    // then the step being awaited gives up with that error.
    const failed = new Promise((_, reject) => {
      pc.onconnectionstatechange = () => {
        if (pc.connectionState !== "failed") return;
        if (app.status === "connecting") reject(new Error("The WebRTC connection failed."));
        else if (app.status === "live") {
          showError("The WebRTC connection failed.");
          stop("failed");
        }
      };
    });
    failed.catch(() => {}); // a connection that never fails leaves it pending: nothing to report
    await pc.setLocalDescription(await pc.createOffer());
    await Promise.race([iceGatheringDone(pc), failed]);
    app.socket.send(JSON.stringify({
      type: "webrtc_offer",
      offer: { type: "offer", sdp: pc.localDescription.sdp },
      prompt,
      output: gainsFor(Number($("mix").value)),
    }));
    const answer = await Promise.race([answered, failed]);
    app.answer = answer;
    $("m-latency").textContent = `${answer.latency_ms.toFixed(0)} ms`;
    showUnderstood(answer.understood);
    await pc.setRemoteDescription({ type: "answer", sdp: preferHighQualityOpus(answer.answer.sdp) });
    await Promise.race([channelOpen(app.channel), failed]);
    app.statsTimer = setInterval(readStats, 1000);
    app.pingTimer = setInterval(() => app.socket && app.socket.send(JSON.stringify({ type: "webrtc_ping" })), PING_EVERY_MS);
    if (app.nodes.file) app.nodes.file.start(); // now that the server listens: none of the file is lost
    setStatus("live");
    return answer;
  } catch (error) {
    showError(error.message || String(error));
    stop("failed");
    return null;
  }
}

function waitForAnswer(socket) {
  return new Promise((resolve, reject) => {
    socket.onmessage = (event) => {
      if (typeof event.data !== "string") return;
      const message = JSON.parse(event.data);
      if (message.type === "webrtc_answer") resolve(message);
      else if (message.type === "error") {
        const error = new Error(`server: ${message.message || message.code}`);
        if (app.status === "connecting") reject(error);
        else showError(error.message);
      }
    };
    socket.onclose = () => {
      // The call lives as long as its signalling socket: the server hangs up when it closes.
      if (app.status === "connecting") reject(new Error("the server closed the connection"));
      else if (app.status === "live") {
        showError("The server closed the connection.");
        stop("stopped");
      }
    };
  });
}

function channelOpen(channel) {
  if (channel.readyState === "open") return Promise.resolve();
  return new Promise((resolve) => channel.addEventListener("open", resolve, { once: true }));
}

function stop(status = "stopped") {
  clearInterval(app.statsTimer);
  clearInterval(app.pingTimer);
  if (app.pc) app.pc.close();
  if (app.socket) {
    app.socket.onclose = null;
    app.socket.close();
  }
  if (app.input) for (const track of app.input.getTracks()) track.stop();
  if (app.audio) app.audio.close();
  Object.assign(app, { pc: null, socket: null, channel: null, input: null, remote: null, audio: null, nodes: {},
                       boxStart: null, enrolling: false });
  drawBox(null);
  showVoice(null); // the meter of a call that ended; whose voice was enrolled stays shown
  setStatus(status);
}

// ------------------------------------------------------------------------------------------- audio graph

async function setUpAudioGraph() {
  const ctx = app.audio;
  const url = URL.createObjectURL(new Blob([RECORDER_WORKLET], { type: "text/javascript" }));
  await ctx.audioWorklet.addModule(url);
  URL.revokeObjectURL(url);
  const nodes = app.nodes;
  nodes.recorder = new AudioWorkletNode(ctx, "samstream-recorder", { numberOfInputs: 2, numberOfOutputs: 1 });
  nodes.recorder.port.onmessage = onRecorderMessage;
  const silent = ctx.createGain(); // keeps the recorder pulled by the graph without making it audible
  silent.gain.value = 0;
  nodes.recorder.connect(silent).connect(ctx.destination);
  nodes.inputAnalyser = analyser(ctx);
  nodes.outputAnalyser = analyser(ctx);
  const input = nodes.file || (app.input.getAudioTracks().length && ctx.createMediaStreamSource(app.input));
  if (input) {
    input.connect(nodes.inputAnalyser);
    input.connect(nodes.recorder, 0, 0);
  }
  if (app.input.getVideoTracks().length && $("local-video")) $("local-video").srcObject = app.input;
  drawViews();
}

// Browsers start an AudioContext only when allowed to play (after a click, or by their autoplay policy) and
// when they have an audio output: say so rather than wait for ever.
async function audioRunning(ctx, timeoutMs = 5000) {
  await Promise.race([ctx.resume(), new Promise((resolve) => setTimeout(resolve, timeoutMs))]);
  if (ctx.state !== "running") {
    throw new Error("The browser did not start audio (no audio output, or playback not allowed yet): click Start.");
  }
}

// An audio file instead of the microphone (and camera): no microphone needed, and the same sound every time.
// Decoded at the AudioContext's rate and sent as a mono track; it plays once, from the moment the call is live.
async function playFile(file) {
  let buffer;
  try {
    buffer = await app.audio.decodeAudioData(await file.arrayBuffer());
  } catch (error) {
    throw new Error(`${file.name || "the file"} is not an audio file the browser can decode (${error.message || error})`);
  }
  const source = (app.nodes.file = new AudioBufferSourceNode(app.audio, { buffer }));
  const track = app.audio.createMediaStreamDestination();
  track.channelCount = 1;
  source.connect(track);
  return track.stream;
}

function analyser(ctx) {
  const node = ctx.createAnalyser();
  node.fftSize = 2048;
  node.smoothingTimeConstant = 0;
  return node;
}

function onRemoteTrack(event) {
  const stream = event.streams[0] || new MediaStream([event.track]);
  if (event.track.kind === "video") {
    if ($("remote-video")) $("remote-video").srcObject = stream;
    return;
  }
  app.remote = stream;
  // Chromium only feeds a remote WebRTC stream to WebAudio while a media element plays it (muted here:
  // what you hear goes through WebAudio).
  const element = $("remote");
  element.srcObject = stream;
  element.play().catch(() => {});
  const source = app.audio.createMediaStreamSource(stream);
  source.connect(app.nodes.outputAnalyser);
  app.nodes.outputAnalyser.connect(app.audio.destination);
  source.connect(app.nodes.recorder, 0, 1);
  app.nodes.remote = source;
}

// ------------------------------------------------------------------------------------------- recording

// Record the input (microphone or file) and what you hear (output), sample-aligned on the AudioContext clock.
function startRecording() {
  app.recording = { input: [], output: [] };
  app.nodes.recorder.port.postMessage("start");
}

function stopRecording() {
  return new Promise((resolve) => {
    app.recorderStopped = () => {
      const recording = app.recording;
      app.recording = null;
      resolve({ sampleRate: app.audio.sampleRate, input: concat(recording.input), output: concat(recording.output) });
    };
    app.nodes.recorder.port.postMessage("stop");
  });
}

function onRecorderMessage(event) {
  if (event.data === "stopped") {
    if (app.recorderStopped) app.recorderStopped();
    app.recorderStopped = null;
  } else if (app.recording) {
    app.recording.input.push(event.data[0]);
    app.recording.output.push(event.data[1]);
  }
}

async function saveRecording() {
  const recording = await stopRecording();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(wavBlob(recording.output, recording.sampleRate));
  link.download = "samstream-output.wav";
  link.click();
}

function concat(blocks) {
  const out = new Float32Array(blocks.reduce((n, block) => n + block.length, 0));
  let offset = 0;
  for (const block of blocks) {
    out.set(block, offset);
    offset += block.length;
  }
  return out;
}

function toBase64(samples) {
  const bytes = new Uint8Array(samples.buffer, samples.byteOffset, samples.byteLength);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

function wavBlob(samples, rate) {
  const data = new DataView(new ArrayBuffer(44 + samples.length * 2));
  const text = (offset, s) => [...s].forEach((c, i) => data.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF"); data.setUint32(4, 36 + samples.length * 2, true); text(8, "WAVE"); text(12, "fmt ");
  data.setUint32(16, 16, true); data.setUint16(20, 1, true); data.setUint16(22, 1, true);
  data.setUint32(24, rate, true); data.setUint32(28, rate * 2, true); data.setUint16(32, 2, true);
  data.setUint16(34, 16, true); text(36, "data"); data.setUint32(40, samples.length * 2, true);
  samples.forEach((x, i) => data.setInt16(44 + i * 2, Math.max(-32768, Math.min(32767, Math.round(x * 32768))), true));
  return new Blob([data], { type: "audio/wav" });
}

// ------------------------------------------------------------------------------------------- metrics

function onControlMessage(message) {
  if (message.type === "metrics") {
    app.metrics = message;
    $("m-latency").textContent = `${message.latency_ms.toFixed(0)} ms`;
    $("m-rtf").textContent = message.rtf.toFixed(2);
    $("m-level").textContent = ["full", "fewer steps", "pass-through"][message.level] || String(message.level);
    $("m-level").className = message.degraded ? "degraded" : "";
    $("m-time").textContent = `${message.stream_s.toFixed(1)} s`;
    showJudgeScore(message.quality);
    showPrompt(message.prompt);
    showVoice(message.voice);
  } else if (message.type === "prompt") {
    noteEnrollment(message);
    showPrompt(message.prompt);
    showUnderstood(message.understood);
  } else if (message.type === "error") {
    if (message.request === "enroll") app.enrolling = false;
    showError(`server: ${message.message}`);
  }
}

function clock(seconds) {
  const s = Math.max(0, Math.round(seconds));
  return `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
}

// Whose voice is enrolled: the prompt message after an "enroll" carries the clip's length and the stream time.
function noteEnrollment(message) {
  const seconds = message.prompt && message.prompt.example_s;
  if (!seconds) app.enrollment = null;
  else if (app.enrolling || !app.enrollment) {
    const file = app.nodes.file ? $("source-file").files[0] : null;
    app.enrollment = { seconds, at_s: message.stream_s, source: file ? file.name : null };
  }
  app.enrolling = false;
  const e = app.enrollment;
  $("voice-enrolled").textContent = !e ? "no voice"
    : `${e.source ? `a voice from ${e.source}` : "your voice"}, ${e.seconds.toFixed(1)} s enrolled at ${clock(e.at_s)}`;
  if (!e) showVoice(null);
}

// The live voice meter (the server's voice meter, while a voice is enrolled): GE2E similarity, 0-1.
function showVoice(voice) {
  for (const side of ["input", "output"]) {
    const value = voice ? voice[side] : null;
    $(`voice-${side}`).value = value == null ? 0 : Math.max(0, value);
    $(`voice-${side}-value`).textContent = voice && voice.error ? "error"
      : value == null ? (voice ? "quiet" : "—") : value.toFixed(2);
  }
  if (voice && voice.error) $("voice-input-value").title = voice.error;
}

// The live SAM Audio Judge score (null unless the server runs with --quality-interval): overall, 1-5.
function showJudgeScore(quality) {
  const cell = $("m-judge");
  if (!quality || quality.overall === undefined) {
    cell.textContent = quality && quality.error ? "error" : "—";
    return;
  }
  cell.textContent = `${quality.overall.toFixed(2)} at ${quality.window_end_s.toFixed(0)} s`;
  cell.title = `recall ${quality.recall.toFixed(2)}, precision ${quality.precision.toFixed(2)}, ` +
    `faithfulness ${quality.faithfulness.toFixed(2)} over ${quality.window_s} s of output`;
}

function showPrompt(prompt) {
  app.prompt = prompt;
  $("prompt-now").textContent = describePrompt(prompt);
  if (!app.boxStart) drawBox(prompt && prompt.box); // the server's box, unless one is being drawn
}

// How the model took the prompt (`understood`, docs/protocol.md; null when the model does not say). A class
// whose calibrated floor is 1 is one the default model cannot separate: say so, as `samstream separate` does.
const BRANCHES = { expert: "the speech expert", voice: "the voice picker", general: "the general separator" };

function describeUnderstood(understood) {
  if (!understood) return { text: "", warning: false };
  const networks = Object.keys(understood.general_networks || {}).length;
  const served = networks > 1 ? `a blend of ${networks} general networks`
    : BRANCHES[understood.branch] || understood.branch;
  const similarity = typeof understood.similarity === "number" ? ` (similarity ${understood.similarity.toFixed(2)})` : "";
  const heard = understood.class ? `heard as "${understood.class}"${similarity}`
    : understood.branch === "voice" ? "the enrolled voice" : "no class near it";
  if (understood.mask_floor === 1) {
    return { warning: true, text: `not separated: the default model cannot separate "${understood.class}", so the `
      + "target is your input (less any speech the speech expert finds)" };
  }
  return { text: `${heard}, served by ${served}`, warning: false };
}

function showUnderstood(understood) {
  const { text, warning } = describeUnderstood(understood);
  const element = $("prompt-understood");
  element.textContent = text;
  element.className = warning ? "status warning" : "status";
}

// ------------------------------------------------------------------------------------------- visual prompt

// A box dragged on your camera's picture marks the speaker to keep: sent as {"type": "visual_mask", "box":
// [x0, y0, x1, y1]}, fractions of the picture from its top-left corner. The overlay shows the box the server
// uses (from its prompt messages), so a refused box (a model without a vision encoder) does not linger.
function drawBox(box) {
  const element = $("box");
  element.hidden = !box;
  if (!box) return;
  const [x0, y0, x1, y1] = box;
  Object.assign(element.style, { left: `${100 * x0}%`, top: `${100 * y0}%`,
                                 width: `${100 * (x1 - x0)}%`, height: `${100 * (y1 - y0)}%` });
}

function setUpBoxDrawing() {
  const frame = $("local-frame");
  const point = (event) => {
    const rect = frame.getBoundingClientRect();
    const clamp = (x) => Math.min(1, Math.max(0, x));
    return [clamp((event.clientX - rect.left) / rect.width), clamp((event.clientY - rect.top) / rect.height)];
  };
  const boxTo = (event) => {
    const [x, y] = point(event);
    const [x0, y0] = app.boxStart;
    const round = (v) => Math.round(v * 10000) / 10000;
    return [round(Math.min(x0, x)), round(Math.min(y0, y)), round(Math.max(x0, x)), round(Math.max(y0, y))];
  };
  frame.addEventListener("pointerdown", (event) => {
    if (app.status !== "live") return;
    event.preventDefault();
    frame.setPointerCapture(event.pointerId);
    app.boxStart = point(event);
  });
  frame.addEventListener("pointermove", (event) => { if (app.boxStart) drawBox(boxTo(event)); });
  frame.addEventListener("pointerup", (event) => {
    if (!app.boxStart) return;
    const box = boxTo(event);
    app.boxStart = null;
    // A click (a box under 2 % of the picture either way) is no box: the one in use stays.
    const drawn = box[2] - box[0] >= 0.02 && box[3] - box[1] >= 0.02;
    if (drawn) send({ type: "visual_mask", box });
    drawBox(drawn ? box : app.prompt && app.prompt.box);
  });
  frame.addEventListener("pointercancel", () => {
    app.boxStart = null;
    drawBox(app.prompt && app.prompt.box);
  });
  $("clear-box").addEventListener("click", () => { if (app.prompt && app.prompt.box) send({ type: "visual_mask", box: null }); });
}

async function readStats() {
  if (!app.pc) return;
  const report = await app.pc.getStats();
  report.forEach((stat) => {
    if (stat.type === "candidate-pair" && stat.nominated && stat.currentRoundTripTime !== undefined) {
      app.stats.rttMs = stat.currentRoundTripTime * 1000;
    }
    if (stat.type === "inbound-rtp" && stat.kind === "audio" && stat.jitterBufferEmittedCount) {
      app.stats.jitterBufferMs = (1000 * stat.jitterBufferDelay) / stat.jitterBufferEmittedCount;
    }
  });
  if (app.stats.rttMs !== undefined) $("m-rtt").textContent = `${app.stats.rttMs.toFixed(0)} ms`;
  if (app.stats.jitterBufferMs !== undefined) $("m-jitter").textContent = `${app.stats.jitterBufferMs.toFixed(0)} ms`;
}

// ------------------------------------------------------------------------------------------- spectrograms

function drawViews() {
  const views = [[app.nodes.inputAnalyser, $("input-view")], [app.nodes.outputAnalyser, $("output-view")]];
  const bins = new Uint8Array(1024);
  const step = () => {
    if (!app.audio) return;
    for (const [node, canvas] of views) {
      node.getByteFrequencyData(bins);
      scrollColumn(canvas, bins, app.audio.sampleRate);
    }
    requestAnimationFrame(step);
  };
  requestAnimationFrame(step);
}

// Scroll the spectrogram left by 2 px and paint the newest column: 60 Hz .. 8 kHz (the model's band) on a
// logarithmic axis, low at the bottom.
function scrollColumn(canvas, bins, rate) {
  const g = canvas.getContext("2d");
  const { width, height } = canvas;
  g.drawImage(canvas, -2, 0);
  const binHz = rate / 2 / bins.length;
  for (let y = 0; y < height; y++) {
    const hz = 60 * Math.pow(8000 / 60, (height - 1 - y) / (height - 1));
    const value = bins[Math.min(bins.length - 1, Math.round(hz / binHz))] / 255;
    g.fillStyle = `hsl(${250 - 200 * value}, 80%, ${8 + 55 * value}%)`;
    g.fillRect(width - 2, y, 2, 1);
  }
}

// ------------------------------------------------------------------------------------------- controls

function holdButton(button, sign) {
  let held = false;
  const begin = (event) => {
    event.preventDefault();
    if (held || button.disabled) return;
    held = true;
    button.classList.add("held");
    send({ type: "span_begin", sign });
  };
  const end = () => {
    if (!held) return;
    held = false;
    button.classList.remove("held");
    send({ type: "span_end", sign });
  };
  button.addEventListener("pointerdown", begin);
  for (const name of ["pointerup", "pointerleave", "pointercancel"]) button.addEventListener(name, end);
  button.addEventListener("keydown", (event) => { if ((event.key === " " || event.key === "Enter") && !event.repeat) begin(event); });
  button.addEventListener("keyup", (event) => { if (event.key === " " || event.key === "Enter") end(); });
}

function setUpControls() {
  $("start").addEventListener("click", () => start());
  $("source-file").addEventListener("change", () => {
    $("start").textContent = $("source-file").files.length ? "Start file" : "Start microphone";
  });
  $("stop").addEventListener("click", () => stop());
  $("prompt-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (app.status === "live") send({ type: "prompt", text: $("prompt").value.trim() || null });
  });
  holdButton($("this-sound"), "+");
  holdButton($("not-this"), "-");
  $("clear-spans").addEventListener("click", () => send({ type: "prompt", spans: [] }));
  $("enroll").addEventListener("click", () => {
    app.enrolling = true;
    send({ type: "enroll", seconds: Number($("enroll-seconds").value) });
  });
  $("clear-voice").addEventListener("click", () => send({ type: "prompt", example: null }));
  $("mix").addEventListener("input", (event) => setMix(event.target.value));
  $("hear-target").addEventListener("click", () => setMix(0));
  $("hear-original").addEventListener("click", () => setMix(50));
  $("hear-residual").addEventListener("click", () => setMix(100));
  $("record").addEventListener("click", async () => {
    const button = $("record");
    if (!app.recording) {
      startRecording();
      button.textContent = "Save recording";
      button.classList.add("recording");
    } else {
      button.textContent = "Record";
      button.classList.remove("recording");
      await saveRecording();
    }
  });
  setUpBoxDrawing();
  $("mix-label").textContent = mixLabel($("mix").value);
  setStatus("idle");
}

setUpControls();
// Unexpected failures show on the page (and in samstream.state().errors), not only in the console.
window.addEventListener("error", (event) => showError(`page error: ${event.message}`));
window.addEventListener("unhandledrejection", (event) => showError(`page error: ${event.reason?.message || event.reason}`));

// A small scripting surface (demos and the end-to-end test drive the page through it).
window.samstream = {
  start,
  stop,
  send,
  setMix,
  startRecording,
  stopRecording,
  async stopRecordingBase64() {
    const recording = await stopRecording();
    return { sampleRate: recording.sampleRate, input: toBase64(recording.input), output: toBase64(recording.output) };
  },
  saveRecording,
  describeUnderstood,
  state: () => ({ status: app.status, answer: app.answer, metrics: app.metrics, prompt: app.prompt,
                  errors: app.errors, stats: app.stats, enrollment: app.enrollment,
                  voiceShown: ["voice-enrolled", "voice-input-value", "voice-output-value"].map((id) => $(id).textContent) }),
};
