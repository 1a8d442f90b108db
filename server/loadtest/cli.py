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
import json
import logging
import sys
from pathlib import Path

from models.sample_mel import SampleMelError, load_sample_mel, tile_mel
from server.loadtest.attacks import AttackPlan, AttackReport, format_report, run_attacks
from server.loadtest.client import Plan, StreamResult, run_load
from server.loadtest.report import Progress, format_table, summarize
from server.loadtest.sample import write_sample_mel


class LoadtestError(RuntimeError):
    """The load test cannot run (bad arguments, missing sample mel, server unreachable)."""


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
    parser.add_argument(
        "--openai",
        default=None,
        metavar="FORMAT",
        choices=["mp3", "opus", "aac", "flac", "wav", "pcm"],
        help="POST --text to /v1/audio/speech in this response_format; TTFA is the first byte",
    )
    parser.add_argument(
        "--attack",
        action="store_true",
        help="run hostile clients beside the streams (big bodies, idle sockets, slow senders) "
        "and report /healthz latency",
    )
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
        "stream); time to first audio then counts from when the first sentence's end was sent "
        "(negative: audio began before it, e.g. the sentence's opening clause)",
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
    if args.openai is not None and args.text is None:
        raise LoadtestError("--openai needs --text: the OpenAI route speaks text")
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
        openai_format=args.openai,
        tokens_ms=args.tokens_ms,
    )


def run(args: argparse.Namespace) -> int:
    if args.write_sample_mel is not None:
        mel = write_sample_mel(args.write_sample_mel)
        print(f"wrote {args.write_sample_mel}: {mel.shape[0]} frames")
        return 0
    try:
        plan = plan_from_args(args)
    except (LoadtestError, SampleMelError) as exc:
        print(f"sparrow loadtest: {exc}", file=sys.stderr)
        return 2
    # One INFO line per request from httpx would bury the progress bar.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    progress = Progress(not args.no_progress, plan.requests, plan.duration)
    attack = AttackPlan(plan.url, plan.api_key) if args.attack else None
    results, wall, attacked = asyncio.run(_run(plan, progress, attack))
    summary = summarize(results, plan, wall)
    if attacked is not None:
        summary["attack"] = attacked.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_table(summary))
        if attacked is not None:
            print(format_report(summary["attack"]))
    if summary["ok"] == 0 and summary["refused"] == 0:
        return 1  # nothing got through at all: the server is down or the request is wrong
    return 1 if summary["errors"] else 0


async def _run(
    plan: Plan, progress: Progress, attack: AttackPlan | None
) -> tuple[list[StreamResult], float, AttackReport | None]:
    """The load, with the attackers beside it for as long as it runs when `attack` is given."""
    if attack is None:
        results, wall = await run_load(plan, progress)
        return results, wall, None
    stop = asyncio.Event()
    attackers = asyncio.ensure_future(run_attacks(attack, stop))
    await asyncio.sleep(2.0)  # the attack is under way before the first stream starts
    try:
        results, wall = await run_load(plan, progress)
    finally:
        stop.set()
    return results, wall, await attackers


if __name__ == "__main__":  # pragma: no cover
    from server.cli import main

    sys.exit(main(["loadtest", *sys.argv[1:]]))
