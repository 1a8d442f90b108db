"""`sparrow loadtest`: the jitter-buffer arithmetic, its inputs, and real runs against a live
server with the tiny model (more streams than cores; refusals with a tiny capacity)."""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import pytest
from websockets.sync.client import connect as ws_connect

from models.dsp.features import SPEC
from server.loadtest import cli as loadtest
from server.loadtest.client import count_late_frames, send_tokens

pytestmark = pytest.mark.live

FRAME_S = SPEC.hop_length / SPEC.sample_rate  # 12.5 ms of audio per frame


def test_count_late_frames_on_time_stream() -> None:
    # One frame every 12.5 ms, exactly real time: never late with any buffer.
    arrivals = [(i * FRAME_S, 300) for i in range(50)]
    assert count_late_frames(arrivals, buffer_s=0.0) == (0, 50)


def test_count_late_frames_stall_beyond_buffer() -> None:
    # Frames 0..9 on time, then a 300 ms stall before frame 10; 100 ms buffer absorbs only part.
    arrivals = [(i * FRAME_S, 300) for i in range(10)]
    stall_at = 10 * FRAME_S + 0.3
    arrivals += [(stall_at + i * 1e-4, 300) for i in range(30)]
    late, total = count_late_frames(arrivals, buffer_s=0.1)
    assert total == 40
    # Frame f plays at 0.1 + f * 12.5 ms; arrivals at ~0.425 s: frames 10..26 are late.
    expected = sum(1 for f in range(10, 40) if stall_at + (f - 10) * 1e-4 > 0.1 + f * FRAME_S)
    assert late == expected == 17
    # A buffer longer than the stall hides it completely.
    assert count_late_frames(arrivals, buffer_s=0.35) == (0, 40)


def test_count_late_frames_multi_frame_messages() -> None:
    # 4 frames per message arriving every 50 ms is real time; a message 200 ms late is not.
    arrivals = [(i * 4 * FRAME_S, 1200) for i in range(5)]
    assert count_late_frames(arrivals, buffer_s=0.0) == (0, 20)
    arrivals.append((5 * 4 * FRAME_S + 0.2, 1200))
    late, total = count_late_frames(arrivals, buffer_s=0.05)
    assert total == 24 and late == 4


def test_count_late_frames_empty() -> None:
    assert count_late_frames([], buffer_s=0.1) == (0, 0)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    loadtest.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert loadtest.run(_args("--streams", "0")) == 2
    assert "--streams" in capsys.readouterr().err
    assert loadtest.run(_args("--duration", "-1")) == 2


def test_default_bound_is_one_utterance_per_stream() -> None:
    plan = loadtest.plan_from_args(_args("--streams", "3", "--mel-frames", "10"))
    assert plan.requests == 3 and plan.duration is None
    assert plan.mel is not None and plan.mel.shape == (10, 80)


def test_unreachable_server_is_an_error_not_a_hang(capsys: pytest.CaptureFixture[str]) -> None:
    # Port 9 (discard) on localhost is closed: every stream fails fast and the exit code says so.
    rc = loadtest.run(
        _args(
            "--url",
            "http://127.0.0.1:9",
            "--streams",
            "2",
            "--mel-frames",
            "8",
            "--timeout",
            "5",
            "--json",
            "--no-progress",
        )
    )
    assert rc == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["streams"] == 2 and summary["errors"] == 2 and summary["ok"] == 0
    assert summary["real_time"] is False


# --- against a real server (tiny model, real pinned workers) ------------------------------------


def _run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    rc = loadtest.run(_args(*argv, "--json", "--no-progress", "--timeout", "60"))
    return rc, json.loads(capsys.readouterr().out)


def test_more_streams_than_cores_all_served(live, capsys: pytest.CaptureFixture[str]) -> None:
    cores = len(live.app.state.pool.workers)
    streams = cores + 2
    frames = 120
    rc, s = _run_json(
        capsys,
        "--url",
        live.url,
        "--streams",
        str(streams),
        "--requests",
        str(2 * streams),
        "--mel-frames",
        str(frames),
    )
    assert rc == 0, s
    assert s["streams"] == 2 * streams and s["ok"] == 2 * streams
    assert s["refused"] == 0 and s["errors"] == 0
    # Every utterance came back whole: one 300-sample frame per mel frame.
    assert s["audio_s"] == pytest.approx(2 * streams * frames * 300 / 24_000)
    assert s["frames"] == 2 * streams * frames
    assert s["ttfa_ms"]["p50"] > 0 and s["server_rtf"]["p50"] > 0


def test_token_stream_mode(live, capsys: pytest.CaptureFixture[str]) -> None:
    """--tokens-ms: the text goes a word per message, and time to first audio counts from the
    message that made the first sentence's end known, so it is shorter than the whole send."""
    text = "Hello there, my good friend. How are you doing today?"
    args = ("--url", live.url, "--streams", "1", "--requests", "2", "--text", text)
    rc, s = _run_json(capsys, *args, "--tokens-ms", "30")
    assert rc == 0 and s["ok"] == 2, s
    assert 0 < s["ttfa_ms"]["p50"] and s["audio_s"] > 2 * 2.0
    assert loadtest.run(_args("--tokens-ms", "20")) == 2  # needs --text
    assert "--tokens-ms" in capsys.readouterr().err


def test_token_stream_audio_is_timed_while_tokens_are_still_sent(
    live, capsys: pytest.CaptureFixture[str]
) -> None:
    """Audio is read while the tokens go out: the first audio's time does not include sending
    the 16 tokens (1.6 s) that follow the first sentence's end."""
    text = "Hello there, my good friend. " + " ".join(["and then some more"] * 4) + "."
    args = ("--url", live.url, "--streams", "1", "--requests", "1", "--text", text)
    rc, s = _run_json(capsys, *args, "--tokens-ms", "100")
    assert rc == 0 and s["ok"] == 1, s
    assert s["ttfa_ms"]["p50"] < 1000


def test_send_tokens_times_the_first_sentence_end() -> None:
    sent: list[tuple[float, str]] = []

    class FakeWs:
        async def send(self, message: str) -> None:
            sent.append((time.perf_counter(), json.loads(message)["text"]))

    ready = asyncio.run(send_tokens(FakeWs(), "Hi there, you. How are (you)?", 10))
    assert [t for _, t in sent] == ["Hi", " there,", " you.", " How", " are", " (you)?"]
    assert sent[3][0] <= ready < sent[4][0]  # " How" made the end of "Hi there, you." known


def test_table_report(live, capsys: pytest.CaptureFixture[str]) -> None:
    rc = loadtest.run(
        _args("--url", live.url, "--streams", "3", "--mel-frames", "40", "--no-progress")
    )
    out = capsys.readouterr().out
    assert rc == 0
    for needle in ("time to first audio ms", "real-time factor server", "late frames", "p99"):
        assert needle in out
    assert "streams: 3  ok: 3  refused: 0  errors: 0" in out


def test_http_mode(live, capsys: pytest.CaptureFixture[str]) -> None:
    rc, s = _run_json(
        capsys,
        "--url",
        live.url,
        "--http",
        "--streams",
        "2",
        "--requests",
        "3",
        "--mel-frames",
        "60",
    )
    assert rc == 0, s
    assert s["mode"] == "http" and s["ok"] == 3
    assert s["audio_s"] == pytest.approx(3 * 60 * 300 / 24_000)
    assert s["server_rtf"]["p50"] is not None  # from the X-Real-Time-Factor header


def test_tiny_capacity_refuses_streams(
    live_server_factory, capsys: pytest.CaptureFixture[str]
) -> None:
    # One core admitting one stream: six simultaneous long utterances cannot all get in.
    server = live_server_factory(cores=1, max_streams=1)
    rc, s = _run_json(
        capsys, "--url", server.url, "--streams", "6", "--requests", "6", "--mel-frames", "800"
    )
    assert s["refused"] >= 1, s
    assert s["ok"] >= 1 and s["errors"] == 0
    assert s["ok"] + s["refused"] == 6
    assert s["real_time"] is False  # refusals mean the deployment is too small
    assert rc == 0  # refusals are the server working as designed, not a load-test failure
    # Over HTTP a tiny model's request lasts milliseconds, so whether six of them overlap depends
    # on the machine: a websocket holds the only slot instead (a session takes one at its first
    # input), and every request meets a full server, counted as refused, not as an error.
    with ws_connect(server.ws_url, max_size=None) as ws:
        assert json.loads(ws.recv())["type"] == "start"
        ws.send(json.dumps({"type": "flush"}))
        assert json.loads(ws.recv())["type"] == "flushed"
        rc, s = _run_json(
            capsys,
            "--url",
            server.url,
            "--http",
            "--streams",
            "6",
            "--requests",
            "6",
            "--mel-frames",
            "800",
            "--retry-after",
            "60",
            "--duration",
            "1",
        )
    assert s["refused"] == 6 and s["ok"] == 0 and s["errors"] == 0, s
    # A refused slot waits --retry-after before trying again, as a client honouring Retry-After
    # would: over 3 s, two slots kept out by the third refuse a handful of times, not hundreds.
    rc, s = _run_json(
        capsys,
        "--url",
        server.url,
        "--streams",
        "3",
        "--duration",
        "3",
        "--retry-after",
        "1",
        "--mel-frames",
        "400",
    )
    assert s["ok"] >= 1 and s["errors"] == 0, s
    assert 1 <= s["refused"] <= 12, s
    # ... but never past --duration: a 60 s retry wait is cut short when the run's time is up
    # (the bound is generous: the admitted 5 s utterance still finishes).
    t0 = time.monotonic()
    rc, s = _run_json(
        capsys,
        "--url",
        server.url,
        "--streams",
        "3",
        "--duration",
        "2",
        "--retry-after",
        "60",
        "--mel-frames",
        "400",
    )
    assert s["refused"] >= 1 and s["errors"] == 0, s
    assert time.monotonic() - t0 < 30


def test_api_key(live_server_factory, capsys: pytest.CaptureFixture[str]) -> None:
    server = live_server_factory(cores=1, api_key="k-123")
    rc, s = _run_json(capsys, "--url", server.url, "--streams", "2", "--mel-frames", "40")
    assert rc == 1 and s["errors"] == 2 and s["ok"] == 0
    assert any("1008" in kind for kind in s["error_kinds"]), s["error_kinds"]
    rc, s = _run_json(
        capsys, "--url", server.url, "--streams", "2", "--mel-frames", "40", "--api-key", "k-123"
    )
    assert rc == 0 and s["ok"] == 2
    rc, s = _run_json(
        capsys,
        "--url",
        server.url,
        "--http",
        "--streams",
        "1",
        "--mel-frames",
        "40",
        "--api-key",
        "k-123",
    )
    assert rc == 0 and s["ok"] == 1


@pytest.mark.parametrize("fmt", ["mp3", "pcm"])
def test_openai_mode_times_the_first_byte(
    live, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, s = _run_json(
        capsys,
        "--url",
        live.url,
        "--openai",
        fmt,
        "--text",
        "Hello there. This is a test.",
        "--streams",
        "1",
        "--requests",
        "2",
    )
    assert rc == 0, s
    assert s["mode"] == f"openai {fmt}" and s["ok"] == 2 and s["ttfa_ms"]["p50"] > 0
    if fmt == "pcm":
        assert s["audio_s"] > 1.0 and s["frames"] > 0
    assert loadtest.run(_args("--openai", "mp3")) == 2  # the OpenAI route needs --text
    assert "--text" in capsys.readouterr().err


def test_attack_mode_reports_health_under_attack(
    live_server_factory, capsys: pytest.CaptureFixture[str]
) -> None:
    """A short attack beside two streams: the report counts probes and each attacker's outcomes
    (no latency asserted: that is the printed figure)."""
    server = live_server_factory(api_key="k", header_timeout_s=1.0)
    rc, s = _run_json(
        capsys,
        "--url",
        server.url,
        "--api-key",
        "k",
        "--attack",
        "--streams",
        "2",
        "--requests",
        "2",
        "--mel-frames",
        "400",
    )
    assert rc == 0, s
    attack = s["attack"]
    assert attack["healthz_probes"] >= 3 and attack["healthz_failures"] == 0
    # refused unread: a 401, or the connection closed under the upload (Connection: close)
    no_key = attack["attackers"]["big body, no key"]
    assert sum(no_key.values()) >= 1
    assert set(no_key) <= {"401", "ReadError", "WriteError", "RemoteProtocolError"}, no_key
    assert "connected" in attack["attackers"]["idle socket"]
    assert attack["attackers"]["slow sender"].get("closed by server", 0) >= 1
