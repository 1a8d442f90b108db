"""`sparrow loadtest`: drive a running Sparrow server with concurrent streams and report latency.

Each stream is one utterance: open the websocket `/v1/stream` (or POST `/v1/synthesize` with
`--http`), send a mel (the shipped sample, tiled to `--mel-frames`) or `--text`, and read the
audio as it arrives. Per stream we measure

- time to first audio (TTFA): connect start -> first PCM byte;
- real-time factor: the server's figure from the `end` message (compute / audio) and the
  client's wall figure ((last audio - first audio) / audio duration);
- late frames: a listener starts playback `--buffer-ms` after the first audio (a jitter buffer);
  a 300-sample frame is late if it arrives after the moment it should be played;
- refusals (websocket close 1013, HTTP 429/503) and errors (anything else that is not success).

Loops are always bounded: `--requests` utterances in total and/or `--duration` seconds, each
utterance with a `--timeout`. The report goes to stdout (a table, or `--json`), progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import math
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

logger = logging.getLogger(__name__)

SAMPLE_MEL_PATH = Path(__file__).parent / "static" / "sample-mel.json"
SAMPLE_TEXT = "Hello! This is Sparrow, speaking to you in real time."
SAMPLE_RATE = 24_000
HOP = 300
N_MELS = 80
REFUSED_WS_CODES = {1013}
_EPS_S = 1e-6  # float rounding slack when comparing arrival and playback times
REFUSED_HTTP_STATUS = {429, 503}


class LoadtestError(RuntimeError):
    """The load test cannot run (bad arguments, missing sample mel, server unreachable)."""


# --- input -------------------------------------------------------------------------------------


def load_sample_mel(path: Path = SAMPLE_MEL_PATH) -> np.ndarray:
    """The shipped sample log-mel (Festival speech, models/dsp/features.py contract): float32 [n, 80]."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise LoadtestError(
            f"sample mel {path} is missing (sparrow loadtest --write-sample-mel)"
        ) from exc
    mel = np.asarray(data["mel"], dtype=np.float32)
    if mel.ndim != 2 or mel.shape[1] != N_MELS or mel.shape[0] == 0:
        raise LoadtestError(f"sample mel {path} has shape {mel.shape}, expected [n, {N_MELS}]")
    return mel


def tile_mel(mel: np.ndarray, frames: int) -> np.ndarray:
    """Repeat/crop `mel` [n, 80] to exactly `frames` frames (speech, then the speech again...)."""
    if frames <= 0:
        raise LoadtestError(f"--mel-frames must be positive, got {frames}")
    reps = math.ceil(frames / mel.shape[0])
    return np.ascontiguousarray(np.tile(mel, (reps, 1))[:frames])


def make_sample_mel(text: str = SAMPLE_TEXT) -> np.ndarray:
    """Speak `text` with Festival (text2wave) and return its log-mel float32 [n, 80].

    Used once to produce server/static/sample-mel.json, so the demo's "sample mel" button and
    `--mel-frames` work without Festival on the client side.
    """
    import soundfile as sf

    from models.dsp.features import log_mel, resample

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "sample.wav"
        subprocess.run(["text2wave", "-o", str(wav)], input=text.encode(), check=True)
        audio, sr = sf.read(wav, dtype="float32")
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    return log_mel(resample(audio, sr, SAMPLE_RATE))


def write_sample_mel(path: Path, text: str = SAMPLE_TEXT) -> np.ndarray:
    mel = make_sample_mel(text)
    payload = {
        "text": text,
        "sample_rate": SAMPLE_RATE,
        "hop_length": HOP,
        "n_mels": N_MELS,
        "shape": list(mel.shape),
        # Two decimals of natural-log mel = 0.04 dB: far below audible, halves the file.
        "mel": [[round(float(v), 2) for v in row] for row in mel],
    }
    path.write_text(json.dumps(payload, separators=(",", ":")) + "\n")
    return mel


def mel_message(mel: np.ndarray) -> str:
    """The compact websocket form: base64 float32 little-endian + shape."""
    data = base64.b64encode(np.ascontiguousarray(mel, dtype="<f4").tobytes()).decode("ascii")
    return json.dumps({"type": "mel", "data": data, "shape": list(mel.shape)})


# --- measurement -------------------------------------------------------------------------------


def count_late_frames(
    arrivals: Sequence[tuple[float, int]],
    buffer_s: float,
    sample_rate: int = SAMPLE_RATE,
    hop: int = HOP,
) -> tuple[int, int]:
    """Frames that arrive after their playback time, and all frames.

    arrivals: (arrival time in s, samples in the message), in arrival order. Playback starts
    `buffer_s` after the first arrival and runs at `sample_rate`; frame f (samples
    [f * hop, (f + 1) * hop)) must have arrived by start + f * hop / sample_rate.
    """
    if not arrivals:
        return 0, 0
    start = arrivals[0][0] + buffer_s
    position = 0  # samples received before this message
    late = 0
    for t, n in arrivals:
        first_frame = position // hop
        position += n
        last_frame = (position - 1) // hop if n > 0 else first_frame - 1
        for f in range(first_frame, last_frame + 1):
            if t > start + f * hop / sample_rate + _EPS_S:
                late += 1
            else:
                # Later frames of this message play even later: none of them is late.
                break
    total = math.ceil(position / hop)
    return late, total


@dataclass
class StreamResult:
    ok: bool = False
    refused: bool = False
    error: str | None = None
    ttfa_s: float | None = None
    samples: int = 0
    wall_s: float = 0.0
    server_rtf: float | None = None
    client_rtf: float | None = None
    late_frames: int = 0
    frames: int = 0
    arrivals: list[tuple[float, int]] = field(default_factory=list, repr=False)
    t_text_ready: float | None = None  # --tokens-ms: when the first sentence's end was sent

    def finish(self, t0: float, buffer_s: float) -> StreamResult:
        self.wall_s = time.perf_counter() - t0
        if self.arrivals:
            self.ttfa_s = self.arrivals[0][0] - (self.t_text_ready or t0)
            self.late_frames, self.frames = count_late_frames(self.arrivals, buffer_s)
            audio_s = self.samples / SAMPLE_RATE
            if audio_s > 0:
                self.client_rtf = (self.arrivals[-1][0] - self.arrivals[0][0]) / audio_s
        return self


@dataclass(frozen=True)
class Plan:
    url: str
    streams: int
    requests: int | None
    duration: float | None
    http: bool
    mel: np.ndarray | None
    text: str | None
    api_key: str | None
    voice: str | None
    buffer_s: float
    timeout: float
    chunk_frames: int
    retry_after_s: float = 1.0
    tokens_ms: float | None = None


def _ws_url(url: str) -> str:
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    if not path.endswith("/v1/stream"):
        path += "/v1/stream"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def _http_base(url: str) -> str:
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def _auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


async def run_ws_stream(plan: Plan, seed: int) -> StreamResult:
    """One utterance over the websocket; never raises for server-side failures."""
    res = StreamResult()
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(plan.timeout):
            async with websockets.connect(
                _ws_url(plan.url),
                additional_headers=_auth_headers(plan.api_key),
                max_size=None,
                open_timeout=plan.timeout,
                ping_interval=None,
            ) as ws:
                config: dict[str, Any] = {"type": "config", "seed": seed}
                if plan.voice:
                    config["voice"] = plan.voice
                await ws.send(json.dumps(config))
                if plan.mel is not None:
                    for i in range(0, plan.mel.shape[0], plan.chunk_frames):
                        await ws.send(mel_message(plan.mel[i : i + plan.chunk_frames]))
                elif plan.tokens_ms is not None:
                    res.t_text_ready = await send_tokens(ws, plan.text or "", plan.tokens_ms)
                else:
                    await ws.send(json.dumps({"type": "text", "text": plan.text}))
                await ws.send(json.dumps({"type": "close"}))
                async for msg in ws:
                    if isinstance(msg, bytes):
                        n = len(msg) // 2
                        res.samples += n
                        res.arrivals.append((time.perf_counter(), n))
                        continue
                    event = json.loads(msg)
                    kind = event.get("type")
                    if kind == "end":
                        res.server_rtf = event.get("real_time_factor")
                        res.ok = True
                    elif kind == "error":
                        res.error = str(event.get("message", "error"))
                # The server closed the socket; its close code says why.
                code = ws.close_code
                if code in REFUSED_WS_CODES:
                    res.refused, res.ok, res.error = True, False, None
                elif code not in (1000, None) or not res.ok:
                    res.ok = False
                    res.error = res.error or f"closed {code} {ws.close_reason or ''}".strip()
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd else None
        if code in REFUSED_WS_CODES:
            res.refused, res.ok, res.error = True, False, None
        else:
            res.ok = False
            res.error = f"closed {code} {exc.rcvd.reason if exc.rcvd else ''}".strip()
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status in REFUSED_HTTP_STATUS:
            res.refused = True
        else:
            res.error = f"handshake HTTP {status}"
    except TimeoutError:
        res.error = f"timeout after {plan.timeout:g} s"
    except (OSError, InvalidHandshake) as exc:
        res.error = f"{type(exc).__name__}: {exc}"
    return res.finish(t0, plan.buffer_s)


async def send_tokens(ws: Any, text: str, interval_ms: float) -> float:
    """Send `text` a word at a time (" word" tokens, as an LLM streams), `interval_ms` apart;
    return when the token that makes the first sentence's end known (the one after its `.`,
    `!` or `?`: the server needs the following space) was sent."""
    tokens = re.findall(r"\s*\S+", text)
    ready: float | None = None
    for i, token in enumerate(tokens):
        if i:
            await asyncio.sleep(interval_ms / 1000.0)
        await ws.send(json.dumps({"type": "text", "text": token}))
        if ready is None and i and tokens[i - 1].rstrip("\"')]")[-1:] in ".!?":
            ready = time.perf_counter()
    return ready if ready is not None else time.perf_counter()


def _pcm_samples_in_wav_prefix(buf: bytes) -> int | None:
    """Byte offset of PCM data in a RIFF/WAVE header, or None while the header is incomplete."""
    if len(buf) < 12:
        return None
    if buf[:4] != b"RIFF" or buf[8:12] != b"WAVE":
        return 0  # raw PCM
    pos = 12
    while pos + 8 <= len(buf):
        cid, size = buf[pos : pos + 4], int.from_bytes(buf[pos + 4 : pos + 8], "little")
        if cid == b"data":
            return pos + 8
        pos += 8 + size
    return None


async def run_http_request(client: httpx.AsyncClient, plan: Plan, seed: int) -> StreamResult:
    """One utterance via POST /v1/synthesize (WAV, streamed); never raises for server failures."""
    res = StreamResult()
    body: dict[str, Any] = {"seed": seed, "format": "wav"}
    if plan.mel is not None:
        body["mel"] = np.round(plan.mel, 3).tolist()
    else:
        body["text"] = plan.text
    if plan.voice and plan.text is not None:
        body["voice"] = plan.voice  # voices belong to the text front end
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(plan.timeout):
            async with client.stream(
                "POST", "/v1/synthesize", json=body, headers=_auth_headers(plan.api_key)
            ) as resp:
                if resp.status_code in REFUSED_HTTP_STATUS:
                    res.refused = True
                    await resp.aread()
                elif resp.status_code != 200:
                    detail = (await resp.aread())[:200].decode("utf-8", "replace")
                    res.error = f"HTTP {resp.status_code} {detail}"
                else:
                    header = b""
                    offset: int | None = None
                    async for chunk in resp.aiter_bytes():
                        now = time.perf_counter()
                        if offset is None:
                            header += chunk
                            offset = _pcm_samples_in_wav_prefix(header)
                            if offset is None:
                                continue
                            chunk = header[offset:]
                        n = len(chunk) // 2
                        if n:
                            res.samples += n
                            res.arrivals.append((now, n))
                    res.ok = res.samples > 0
                    rtf = resp.headers.get("X-Real-Time-Factor")
                    res.server_rtf = float(rtf) if rtf else None
                    if not res.ok:
                        res.error = "empty audio"
    except TimeoutError:
        res.error = f"timeout after {plan.timeout:g} s"
    except httpx.HTTPError as exc:
        res.error = f"{type(exc).__name__}: {exc}"
    return res.finish(t0, plan.buffer_s)


class Progress:
    """A one-line progress bar on stderr (redrawn in place; silent when disabled)."""

    def __init__(self, enabled: bool, total: int | None, duration: float | None) -> None:
        self.enabled = enabled
        self.total = total
        self.duration = duration
        self.t0 = time.perf_counter()
        self.done = self.ok = self.refused = self.errors = 0

    def add(self, res: StreamResult) -> None:
        self.done += 1
        self.ok += res.ok
        self.refused += res.refused
        self.errors += res.error is not None

    def draw(self, final: bool = False) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.t0
        fractions = []
        if self.total:
            fractions.append(self.done / self.total)
        if self.duration:
            fractions.append(min(1.0, elapsed / self.duration))
        frac = 1.0 if final else max(fractions, default=0.0)
        width = 30
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        sys.stderr.write(
            f"\r[{bar}] {self.done} done: {self.ok} ok {self.refused} refused "
            f"{self.errors} errors  {elapsed:5.1f} s"
        )
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


async def run_load(plan: Plan, progress: Progress) -> tuple[list[StreamResult], float]:
    """Run `plan.streams` concurrent slots until the request budget or the duration is spent."""
    results: list[StreamResult] = []
    started = 0
    t0 = time.perf_counter()
    deadline = t0 + plan.duration if plan.duration else None

    def take() -> int | None:
        nonlocal started
        if plan.requests is not None and started >= plan.requests:
            return None
        if deadline is not None and time.perf_counter() >= deadline:
            return None
        started += 1
        return started - 1

    async with httpx.AsyncClient(
        base_url=_http_base(plan.url),
        timeout=plan.timeout,
        limits=httpx.Limits(max_connections=plan.streams, max_keepalive_connections=plan.streams),
    ) as client:

        async def slot() -> None:
            while (seed := take()) is not None:
                if plan.http:
                    res = await run_http_request(client, plan, seed)
                else:
                    res = await run_ws_stream(plan, seed)
                results.append(res)
                progress.add(res)
                if res.refused:
                    # As a client honouring the server's Retry-After would, instead of a storm of
                    # refused connects that eats the very core being measured. Never past the
                    # deadline: the run ends on time.
                    wait = plan.retry_after_s
                    if deadline is not None:
                        wait = min(wait, max(0.0, deadline - time.perf_counter()))
                    await asyncio.sleep(wait)

        async def ticker() -> None:
            while True:
                progress.draw()
                await asyncio.sleep(0.25)

        tick = asyncio.create_task(ticker())
        try:
            await asyncio.gather(*(slot() for _ in range(plan.streams)))
        finally:
            tick.cancel()
            progress.draw(final=True)
    return results, time.perf_counter() - t0


# --- report ------------------------------------------------------------------------------------


def _pct(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    arr = np.asarray(values, dtype=np.float64)
    return {
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "p99": float(np.percentile(arr, 99)),
        "max": float(arr.max()),
    }


def summarize(results: Sequence[StreamResult], plan: Plan, wall_s: float) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    errors: dict[str, int] = {}
    for r in results:
        if r.error is not None:
            errors[r.error] = errors.get(r.error, 0) + 1
    late_total = sum(r.late_frames for r in ok)
    frames_total = sum(r.frames for r in ok)
    audio_s = sum(r.samples for r in ok) / SAMPLE_RATE
    return {
        "url": plan.url,
        "mode": "http" if plan.http else "websocket",
        "concurrency": plan.streams,
        "buffer_ms": plan.buffer_s * 1000.0,
        "streams": len(results),
        "ok": len(ok),
        "refused": sum(r.refused for r in results),
        "errors": sum(r.error is not None for r in results),
        "error_kinds": errors,
        "wall_s": wall_s,
        "audio_s": audio_s,
        "ttfa_ms": _pct([r.ttfa_s * 1000.0 for r in ok if r.ttfa_s is not None]),
        "server_rtf": _pct([r.server_rtf for r in ok if r.server_rtf is not None]),
        "client_rtf": _pct([r.client_rtf for r in ok if r.client_rtf is not None]),
        "late_frames_per_stream": _pct([float(r.late_frames) for r in ok]),
        "late_frames": late_total,
        "frames": frames_total,
        "streams_with_late_frames": sum(r.late_frames > 0 for r in ok),
        # Real time = every stream admitted, served and played without a gap.
        "real_time": bool(ok) and late_total == 0 and not errors and len(ok) == len(results),
    }


def format_table(s: dict[str, Any]) -> str:
    def row(name: str, d: dict[str, float | None], fmt: str) -> str:
        cells = [("-" if d[k] is None else format(d[k], fmt)) for k in ("p50", "p95", "p99", "max")]
        return f"{name:<24}" + "".join(f"{c:>10}" for c in cells)

    frac = s["late_frames"] / s["frames"] if s["frames"] else 0.0
    lines = [
        (
            f"sparrow loadtest  {s['url']}  {s['mode']}, {s['concurrency']} concurrent, "
            f"jitter buffer {s['buffer_ms']:g} ms"
        ),
        f"streams: {s['streams']}  ok: {s['ok']}  refused: {s['refused']}  errors: {s['errors']}",
        f"audio: {s['audio_s']:.1f} s in {s['wall_s']:.1f} s wall",
        "",
        f"{'':<24}" + "".join(f"{k:>10}" for k in ("p50", "p95", "p99", "max")),
        row("time to first audio ms", s["ttfa_ms"], ".1f"),
        row("real-time factor server", s["server_rtf"], ".3f"),
        row("real-time factor wall", s["client_rtf"], ".3f"),
        row("late frames / stream", s["late_frames_per_stream"], ".0f"),
        "",
        (
            f"late frames: {s['late_frames']} of {s['frames']} ({100.0 * frac:.2f}%), "
            f"{s['streams_with_late_frames']} streams affected"
        ),
    ]
    for kind, n in sorted(s["error_kinds"].items(), key=lambda kv: -kv[1])[:5]:
        lines.append(f"error x{n}: {kind}")
    if s["real_time"]:
        verdict = "REAL-TIME: every stream served with no late frame"
    else:
        reasons = [
            f"{n} {what}"
            for n, what in (
                (s["late_frames"], "late frames"),
                (s["refused"], "streams refused (over capacity)"),
                (s["errors"], "errors"),
            )
            if n
        ]
        verdict = "NOT real-time: " + (", ".join(reasons) or "no stream completed")
    lines.append("verdict: " + verdict)
    return "\n".join(lines)


# --- CLI ---------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    parser.add_argument("--streams", type=int, default=4, help="concurrent streams")
    parser.add_argument(
        "--requests",
        type=int,
        default=None,
        help="utterances in total (default: one per stream unless --duration)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="keep starting utterances for this many seconds",
    )
    parser.add_argument(
        "--http", action="store_true", help="POST /v1/synthesize instead of the websocket"
    )
    src = parser.add_mutually_exclusive_group()
    src.add_argument(
        "--mel-frames",
        type=int,
        default=None,
        help="send the shipped sample mel tiled to this many frames (80 per second)",
    )
    src.add_argument("--text", default=None, help="send this text (server needs Festival)")
    parser.add_argument("--voice", default=None, help="voice id (see GET /v1/voices)")
    parser.add_argument("--api-key", default=None, help="API key (sent as Authorization: Bearer)")
    parser.add_argument(
        "--buffer-ms",
        type=float,
        default=100.0,
        help="client jitter buffer: playback starts this long after first audio",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="per-utterance timeout, s")
    parser.add_argument(
        "--retry-after",
        type=float,
        default=1.0,
        help="seconds a slot waits after a refusal before its next stream (as Retry-After)",
    )
    parser.add_argument(
        "--chunk-frames", type=int, default=40, help="mel frames per websocket message"
    )
    parser.add_argument(
        "--tokens-ms",
        type=float,
        default=None,
        help="with --text: send it a word per message this many ms apart (an LLM's token "
        "stream); time to first audio then counts from when the first sentence's end was sent",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument(
        "--write-sample-mel",
        type=Path,
        default=None,
        metavar="PATH",
        help="(maintenance) regenerate the shipped sample mel with Festival and exit",
    )


def plan_from_args(args: argparse.Namespace) -> Plan:
    if args.streams < 1:
        raise LoadtestError("--streams must be at least 1")
    if args.requests is not None and args.requests < 1:
        raise LoadtestError("--requests must be at least 1")
    if args.duration is not None and args.duration <= 0:
        raise LoadtestError("--duration must be positive")
    if args.chunk_frames < 1:
        raise LoadtestError("--chunk-frames must be at least 1")
    if args.buffer_ms < 0:
        raise LoadtestError("--buffer-ms must not be negative")
    if args.retry_after < 0:
        raise LoadtestError("--retry-after must not be negative")
    if args.tokens_ms is not None and (args.text is None or args.http or args.tokens_ms < 0):
        raise LoadtestError("--tokens-ms needs --text over the websocket and a delay >= 0")
    requests = args.requests
    if requests is None and args.duration is None:
        requests = args.streams
    mel = None
    if args.text is None:
        mel = load_sample_mel()
        if args.mel_frames is not None:
            mel = tile_mel(mel, args.mel_frames)
    return Plan(
        url=args.url,
        streams=args.streams,
        requests=requests,
        duration=args.duration,
        http=args.http,
        mel=mel,
        text=args.text,
        api_key=args.api_key,
        voice=args.voice,
        buffer_s=args.buffer_ms / 1000.0,
        timeout=args.timeout,
        chunk_frames=args.chunk_frames,
        retry_after_s=args.retry_after,
        tokens_ms=args.tokens_ms,
    )


def run(args: argparse.Namespace) -> int:
    if args.write_sample_mel is not None:
        mel = write_sample_mel(args.write_sample_mel)
        print(f"wrote {args.write_sample_mel}: {mel.shape[0]} frames")
        return 0
    try:
        plan = plan_from_args(args)
    except LoadtestError as exc:
        print(f"sparrow loadtest: {exc}", file=sys.stderr)
        return 2
    # One INFO line per request from httpx would bury the progress bar.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    progress = Progress(not args.no_progress, plan.requests, plan.duration)
    results, wall = asyncio.run(run_load(plan, progress))
    summary = summarize(results, plan, wall)
    print(json.dumps(summary, indent=2) if args.json else format_table(summary))
    if summary["ok"] == 0 and summary["refused"] == 0:
        return 1  # nothing got through at all: the server is down or the request is wrong
    return 1 if summary["errors"] else 0


if __name__ == "__main__":  # pragma: no cover
    from server.cli import main

    sys.exit(main(["loadtest", *sys.argv[1:]]))
