// Sparrow browser demo: speak text (or the shipped sample mel) over the websocket /v1/stream and
// play the 24 kHz s16le PCM as it arrives, scheduling one AudioBuffer per message back-to-back.
// Protocol: docs/protocol.md. Plain JS, no dependencies.
"use strict";

const SAMPLE_RATE = 24000;
const BUDGET_US = 40; // real-time budget per sample (1 / 24000 s = 41.7 us, minus headroom)
const JITTER_S = 0.1; // playback starts this long after the first audio, absorbing jitter
const MEL_CHUNK_FRAMES = 20; // sample mel is sent in 250 ms chunks, as a streaming client would

// Page state, read by tests (tests/server/test_demo.py) and handy in the console.
window.sparrowState = {
  samplesReceived: 0,
  ttfaMs: null,
  rtf: null,
  usPerSample: null,
  done: false,
  error: null,
  running: false,
  voices: [],
  model: null,
};

const $ = (id) => document.getElementById(id);
const state = window.sparrowState;

let socket = null;
let audioCtx = null;
let nextPlayTime = 0;
let t0 = 0;
let firstAudioAt = 0;
let waveform = []; // [min, max] per 300-sample frame, for drawing
let sampleMelPromise = null;
let textAvailable = true;

function setStatus(text, kind) {
  const el = $("status");
  el.textContent = text;
  el.className = "status" + (kind ? " " + kind : "");
}

function authQuery() {
  const key = $("apikey").value.trim();
  return key ? "?api_key=" + encodeURIComponent(key) : "";
}

function authHeaders() {
  const key = $("apikey").value.trim();
  return key ? { Authorization: "Bearer " + key } : {};
}

async function getJSON(path) {
  const resp = await fetch(path, { headers: authHeaders() });
  if (!resp.ok) throw new Error(path + " -> HTTP " + resp.status);
  return resp.json();
}

// --- model and voices ---------------------------------------------------------------------------

function findUsPerSample(model) {
  // The model card lists its workers, each with its current per-sample cost (re-estimated from
  // the frames it computes, not only its start-up figure); the slowest sets the real-time margin.
  if (!model || !Array.isArray(model.workers)) return null;
  const measured = model.workers
    .map((w) => w.us_per_sample)
    .filter((v) => typeof v === "number" && isFinite(v));
  return measured.length ? Math.max(...measured) : null;
}

function totalCapacity(model) {
  // Real-time streams the server admits now, over its workers (it follows their costs).
  if (!model || !Array.isArray(model.workers)) return null;
  const caps = model.workers.map((w) => w.capacity).filter((v) => typeof v === "number");
  return caps.length ? caps.reduce((a, b) => a + b, 0) : null;
}

function showUsPerSample(us) {
  state.usPerSample = us;
  if (us === null || us === undefined) return;
  $("usps").textContent = us.toFixed(1) + " µs";
  const bar = $("usps-bar");
  // Scale 0..60 us, so the 40 us budget mark sits at two thirds.
  bar.style.width = Math.min(100, (us / 60) * 100).toFixed(1) + "%";
  bar.classList.toggle("over", us > BUDGET_US);
}

async function loadModel() {
  try {
    const body = await getJSON("/v1/models");
    const models = Array.isArray(body.data) ? body.data : Array.isArray(body) ? body : [body];
    const model = models[0] || null;
    state.model = model;
    const us = findUsPerSample(model);
    showUsPerSample(us);
    const parts = [model && model.id ? model.id : "model"];
    if (model && model.isa) parts.push(model.isa);
    if (model && model.trained === false) parts.push("untrained weights: expect hiss");
    if (us !== null) parts.push(us.toFixed(1) + " µs/sample");
    const capacity = totalCapacity(model);
    if (capacity !== null) parts.push(capacity + (capacity === 1 ? " stream" : " streams") + " now");
    $("model").textContent = parts.join(" · ");
  } catch (err) {
    $("model").textContent = "model info unavailable";
  }
}

async function loadVoices() {
  try {
    const body = await getJSON("/v1/voices");
    const list = Array.isArray(body) ? body : body.data || body.voices || [];
    const select = $("voice");
    select.innerHTML = "";
    for (const v of list) {
      const id = typeof v === "string" ? v : v.id || v.name;
      if (!id) continue;
      const opt = document.createElement("option");
      opt.value = id;
      opt.textContent = typeof v === "object" && v.name && v.name !== id ? v.name + " (" + id + ")" : id;
      if (body.default === id) opt.selected = true;
      select.appendChild(opt);
      state.voices.push(id);
    }
    if (body.text_available === false) {
      // No Festival on the server: text cannot be spoken, the sample mel still can.
      textAvailable = false;
      $("speak").disabled = true;
      $("speak").title = body.message || "the server has no text front end";
    }
    if (!select.options.length) select.innerHTML = '<option value="">default</option>';
  } catch (err) {
    // Voices are optional for the sample mel; keep the "default" entry.
  }
}

function loadSampleMel() {
  if (!sampleMelPromise) {
    sampleMelPromise = fetch("/static/sample-mel.json").then((r) => {
      if (!r.ok) throw new Error("sample mel -> HTTP " + r.status);
      return r.json();
    });
  }
  return sampleMelPromise;
}

// --- figures and drawing -------------------------------------------------------------------------

function showFigures() {
  $("samples").textContent = state.samplesReceived.toLocaleString("en-US");
  $("seconds").textContent = (state.samplesReceived / SAMPLE_RATE).toFixed(2) + " s of audio";
  $("ttfa").textContent = state.ttfaMs === null ? "–" : state.ttfaMs.toFixed(0) + " ms";
  $("rtf").textContent = state.rtf === null ? "–" : state.rtf.toFixed(3);
}

function drawWave() {
  const canvas = $("wave");
  const ctx = canvas.getContext("2d");
  const w = canvas.width;
  const h = canvas.height;
  ctx.fillStyle = "#0b1016";
  ctx.fillRect(0, 0, w, h);
  ctx.strokeStyle = "#2b3642";
  ctx.beginPath();
  ctx.moveTo(0, h / 2);
  ctx.lineTo(w, h / 2);
  ctx.stroke();
  if (!waveform.length) return;
  // At least 8 s of audio fits; longer audio is compressed to the canvas width.
  const frames = Math.max(waveform.length, (8 * SAMPLE_RATE) / 300);
  ctx.fillStyle = "#f5a524";
  for (let x = 0; x < w; x++) {
    const a = Math.floor((x * frames) / w);
    const b = Math.max(a + 1, Math.floor(((x + 1) * frames) / w));
    if (a >= waveform.length) break;
    let lo = 1;
    let hi = -1;
    for (let i = a; i < Math.min(b, waveform.length); i++) {
      lo = Math.min(lo, waveform[i][0]);
      hi = Math.max(hi, waveform[i][1]);
    }
    const y0 = h / 2 - hi * (h / 2 - 4);
    const y1 = h / 2 - lo * (h / 2 - 4);
    ctx.fillRect(x, y0, 1, Math.max(1, y1 - y0));
  }
}

// --- audio ----------------------------------------------------------------------------------------

function playPcm(buffer) {
  const pcm = new Int16Array(buffer);
  const n = pcm.length;
  if (!n) return;
  const now = performance.now();
  if (state.samplesReceived === 0) {
    firstAudioAt = now;
    state.ttfaMs = now - t0;
  }
  state.samplesReceived += n;

  const floats = new Float32Array(n);
  for (let i = 0; i < n; i++) floats[i] = pcm[i] / 32768;
  for (let i = 0; i < n; i += 300) {
    let lo = 1;
    let hi = -1;
    for (let j = i; j < Math.min(n, i + 300); j++) {
      if (floats[j] < lo) lo = floats[j];
      if (floats[j] > hi) hi = floats[j];
    }
    waveform.push([lo, hi]);
  }

  if (audioCtx) {
    const buf = audioCtx.createBuffer(1, n, SAMPLE_RATE);
    buf.copyToChannel(floats, 0);
    const src = audioCtx.createBufferSource();
    src.buffer = buf;
    src.connect(audioCtx.destination);
    // Back-to-back: each buffer starts where the previous one ends; after an underrun, restart
    // the clock with a fresh jitter buffer instead of playing in the past.
    const earliest = audioCtx.currentTime + (nextPlayTime === 0 ? JITTER_S : 0.005);
    nextPlayTime = Math.max(nextPlayTime, earliest);
    src.start(nextPlayTime);
    nextPlayTime += n / SAMPLE_RATE;
  }

  // Live delivery rate until the server reports its compute real-time factor at the end.
  const audioS = state.samplesReceived / SAMPLE_RATE;
  if (audioS > 0.05 && now > firstAudioAt) state.rtf = (now - firstAudioAt) / 1000 / audioS;
  showFigures();
  drawWave();
}

function ensureAudio() {
  const Ctx = window.AudioContext || window.webkitAudioContext;
  if (!Ctx) return null;
  if (!audioCtx) {
    try {
      audioCtx = new Ctx({ sampleRate: SAMPLE_RATE });
    } catch (err) {
      audioCtx = new Ctx(); // the browser resamples our 24 kHz buffers
    }
  }
  if (audioCtx.state === "suspended") audioCtx.resume();
  return audioCtx;
}

// --- streaming ------------------------------------------------------------------------------------

function setRunning(running) {
  state.running = running;
  $("speak").disabled = running || !textAvailable;
  $("sample").disabled = running;
  $("stop").disabled = !running;
}

function finish(error) {
  if (error) {
    state.error = error;
    setStatus(error, "error");
  } else {
    state.done = true;
    setStatus("done: " + (state.samplesReceived / SAMPLE_RATE).toFixed(2) + " s of audio", "done");
  }
  setRunning(false);
  showFigures();
  loadModel(); // the workers' figures follow what they just computed
}

function wsUrl() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  return proto + "//" + location.host + "/v1/stream" + authQuery();
}

async function start(kind) {
  if (state.running) return;
  ensureAudio(); // inside the click handler, so autoplay policies allow it
  Object.assign(state, { samplesReceived: 0, ttfaMs: null, rtf: null, done: false, error: null });
  waveform = [];
  nextPlayTime = 0;
  drawWave();
  showFigures();
  setRunning(true);

  let mel = null;
  if (kind === "mel") {
    setStatus("loading sample mel…");
    try {
      mel = (await loadSampleMel()).mel;
    } catch (err) {
      finish("could not load the sample mel: " + err.message);
      return;
    }
  } else if (!$("text").value.trim()) {
    finish("type some text first");
    return;
  }

  setStatus("connecting…");
  t0 = performance.now();
  const ws = new WebSocket(wsUrl());
  ws.binaryType = "arraybuffer";
  socket = ws;
  let ended = false;
  let serverError = null;

  ws.onopen = async () => {
    setStatus("streaming…");
    const config = { type: "config", seed: 0 };
    if ($("voice").value) config.voice = $("voice").value;
    ws.send(JSON.stringify(config));
    if (mel) {
      for (let i = 0; i < mel.length; i += MEL_CHUNK_FRAMES) {
        if (ws.readyState !== WebSocket.OPEN) return;
        ws.send(JSON.stringify({ type: "mel", mel: mel.slice(i, i + MEL_CHUNK_FRAMES) }));
        // Yield between chunks, like a client whose acoustic model produces mel incrementally.
        await new Promise((r) => setTimeout(r, 20));
      }
    } else {
      ws.send(JSON.stringify({ type: "text", text: $("text").value }));
    }
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "close" }));
  };

  ws.onmessage = (ev) => {
    if (ev.data instanceof ArrayBuffer) {
      playPcm(ev.data);
      return;
    }
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch (err) {
      return;
    }
    if (msg.type === "end") {
      ended = true;
      if (typeof msg.real_time_factor === "number") {
        state.rtf = msg.real_time_factor;
        // Compute per sample seen by this stream: RTF x (1e6 / 24000) us.
        if (state.usPerSample === null) showUsPerSample((msg.real_time_factor * 1e6) / SAMPLE_RATE);
      }
      showFigures();
    } else if (msg.type === "error") {
      serverError = msg.message || "server error";
    }
  };

  ws.onclose = (ev) => {
    socket = null;
    if (ended && !serverError) {
      finish(null);
    } else if (ev.code === 1013) {
      finish("server busy (1013): no free real-time capacity, try again");
    } else {
      finish(serverError || "connection closed (" + ev.code + ")");
    }
  };

  ws.onerror = () => {
    // onclose follows with the code; nothing to add here.
  };
}

function stop() {
  if (socket) socket.close(1000, "stopped by user");
  if (audioCtx) {
    audioCtx.close();
    audioCtx = null;
  }
  nextPlayTime = 0;
}

window.addEventListener("DOMContentLoaded", () => {
  // A key in the page URL (/?api_key=...) pre-fills the field, so a protected server's model card
  // and voices load at once; changing the field reloads them.
  const urlKey = new URLSearchParams(location.search).get("api_key");
  if (urlKey) $("apikey").value = urlKey;
  $("apikey").addEventListener("change", () => {
    state.voices = [];
    loadModel();
    loadVoices();
  });
  $("form").addEventListener("submit", (ev) => ev.preventDefault()); // Enter must not reload
  $("speak").addEventListener("click", () => start("text"));
  $("sample").addEventListener("click", () => start("mel"));
  $("stop").addEventListener("click", stop);
  drawWave();
  loadModel();
  loadVoices();
  loadSampleMel().catch(() => {});
  // The current figures, not the start-up ones: re-read while the page is shown.
  setInterval(() => {
    if (!document.hidden && !state.running) loadModel();
  }, 15000);
});
