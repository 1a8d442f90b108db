"""Websocket /v1/stream protocol through TestClient (real workers, tiny model)."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serverkit import mel_bytes_b64

pytestmark = pytest.mark.festival


def run_session(
    client: TestClient, messages: list[Any]
) -> tuple[dict[str, Any], list[Any], bytes, int]:
    """Send `messages` (dicts as JSON, bytes/str raw); collect until the server closes.

    Returns (start message, JSON events after start, all audio bytes, close code).
    """
    with client.websocket_connect("/v1/stream") as ws:
        start = ws.receive_json()
        for m in messages:
            if isinstance(m, bytes):
                ws.send_bytes(m)
            elif isinstance(m, str):
                ws.send_text(m)
            else:
                ws.send_text(json.dumps(m))
        events: list[Any] = []
        audio = b""
        while True:
            msg = ws.receive()
            if msg["type"] == "websocket.close":
                return start, events, audio, msg["code"]
            if msg.get("bytes") is not None:
                audio += msg["bytes"]
                events.append(len(msg["bytes"]))
            else:
                events.append(json.loads(msg["text"]))


def json_events(events: list[Any]) -> list[dict[str, Any]]:
    return [e for e in events if isinstance(e, dict)]


def test_protocol_round_trip(app_client: TestClient, make_mel: Callable[..., np.ndarray]) -> None:
    mel = make_mel(30, seed=2)
    start, events, audio, code = run_session(
        app_client,
        [
            {"type": "config", "seed": 4},
            {"type": "mel", "mel": mel[:10].tolist()},
            {"type": "mel", **mel_bytes_b64(mel[10:])},
            {"type": "close"},
        ],
    )
    assert start == {"type": "start", "sample_rate": 24000, "format": "s16le", "channels": 1}
    assert code == 1000
    assert all(n % 600 == 0 for n in events if isinstance(n, int))  # whole frames of s16le
    end = json_events(events)[-1]
    assert end["type"] == "end" and end["samples"] == 30 * 300 == len(audio) // 2
    assert end["time_to_first_audio_ms"] >= 0 and end["real_time_factor"] > 0
    pcm = app_client.post(
        "/v1/synthesize", json={"mel": mel.tolist(), "seed": 4, "format": "pcm"}
    ).content
    assert audio == pcm  # same seed and mel: same audio over both transports


def test_flush_splits_utterances(
    app_client: TestClient, make_mel: Callable[..., np.ndarray]
) -> None:
    a, b = make_mel(12, seed=1), make_mel(7, seed=2)
    _, events, audio, code = run_session(
        app_client,
        [
            {"type": "mel", "mel": a.tolist()},
            {"type": "flush"},
            {"type": "flush"},  # an empty utterance is flushed at once
            {"type": "mel", "mel": b.tolist()},
            {"type": "close"},
        ],
    )
    assert code == 1000
    kinds = [(e["type"], e.get("samples")) for e in json_events(events)]
    assert kinds == [("flushed", 12 * 300), ("flushed", 12 * 300), ("end", 19 * 300)]
    # each utterance is a fresh stream with the configured seed (default 0)
    first = app_client.post("/v1/synthesize", json={"mel": a.tolist(), "format": "pcm"}).content
    second = app_client.post("/v1/synthesize", json={"mel": b.tolist(), "format": "pcm"}).content
    assert audio == first + second


def test_text_message(app_client: TestClient) -> None:
    _, events, audio, code = run_session(
        app_client,
        [
            {"type": "config", "voice": "slt", "speed": 1.2},
            {"type": "text", "text": "Streaming speech. Sentence by sentence."},
            {"type": "close"},
        ],
    )
    assert code == 1000, events
    assert len(audio) > 24000 and json_events(events)[-1]["type"] == "end"


def speak_fragments(client: TestClient, fragments: list[str], seed: int = 3) -> bytes:
    messages: list[Any] = [{"type": "config", "seed": seed}]
    messages += [{"type": "text", "text": f} for f in fragments]
    _, events, audio, code = run_session(client, [*messages, {"type": "close"}])
    assert code == 1000, events
    assert not [e for e in json_events(events) if e["type"] == "error"]
    return audio


def test_fragments_speak_as_the_whole_text(app_client: TestClient) -> None:
    whole = speak_fragments(app_client, ["Hello there, my friend. How are you today?"])
    words = ["Hel", "lo", " there", ",", " my", " friend", ".", " How", " are", " you", " today?"]
    assert speak_fragments(app_client, words) == whole  # same sentences, same seed: same audio
    # punctuation, whitespace and emoji between the words: kept as such, never an error
    noisy = ["?", " ", "Hello", " there", ",", " my", " \U0001f600", " friend", ".", " ", "."]
    noisy += ["  ", "How are", "  ", " you", "\n", "today", "?", " ", "...", "\U0001f44d"]
    assert speak_fragments(app_client, noisy) == whole


@pytest.mark.parametrize("junk", [".", " ", "...", "?", "\U0001f600", "\n", "**"])
def test_unspeakable_fragments_keep_the_session(app_client: TestClient, junk: str) -> None:
    audio = speak_fragments(app_client, ["Hello there", junk, junk])
    assert len(audio) > 24000  # the text before the fragment is spoken
    assert speak_fragments(app_client, [junk]) == b""


def test_flush_speaks_the_pending_text(app_client: TestClient) -> None:
    _, events, audio, code = run_session(
        app_client,
        [
            {"type": "text", "text": "Good morning and"},
            {"type": "flush"},
            {"type": "text", "text": "welcome back"},
            {"type": "close"},
        ],
    )
    assert code == 1000, events
    flushed = [e for e in json_events(events) if e["type"] == "flushed"]
    assert len(flushed) == 1 and flushed[0]["samples"] > 12000  # "Good morning and" was spoken
    end = json_events(events)[-1]
    assert end["type"] == "end" and end["samples"] - flushed[0]["samples"] > 12000
    assert end["samples"] == len(audio) // 2


@pytest.mark.parametrize(
    ("messages", "code", "needle"),
    [
        ([b"\x00\xffgarbage"], 1003, "binary messages are not accepted"),
        (["{not json"], 1007, "not valid JSON"),
        ([{"type": "sing"}], 1007, "type"),
        ([{"type": "mel", "mel": [[0.0] * 80], "extra": 1}], 1007, "extra: Extra inputs"),
        ([{"type": "mel", "mel": [[0.0] * 3]}], 1007, "80 bins"),
        ([{"type": "mel", "mel": [[float("nan")] * 80]}], 1007, "non-finite"),
        ([{"type": "config", "seed": "seven"}], 1007, "seed"),
        (
            [{"type": "flush"}, {"type": "config", "seed": 1}],
            1007,
            "config must be the first message",
        ),
        ([{"type": "config", "voice": "nobody"}], 1007, "unknown voice"),
        ([{"type": "text", "text": "z" * 4097}], 1009, "limit is 4096"),
        (
            [{"type": "text", "text": "no end " * 500}, {"type": "text", "text": "at all " * 100}],
            1009,
            "limit is 4096 (max_text_chars)",
        ),
        ([{"type": "mel", "mel": [[-5.0] * 80] * 12_001}], 1009, "limit is 12000"),
    ],
)
def test_bad_messages_close_with_a_code(
    app_client: TestClient, messages: list[Any], code: int, needle: str
) -> None:
    _, events, _, got = run_session(app_client, messages)
    errors = [e for e in json_events(events) if e["type"] == "error"]
    assert got == code and len(errors) == 1 and needle in errors[0]["message"], events


def test_server_still_streams_after_bad_sessions(
    app_client: TestClient, make_mel: Callable[..., np.ndarray]
) -> None:
    run_session(app_client, [b"junk"])
    _, _, audio, code = run_session(
        app_client, [{"type": "mel", "mel": make_mel(5).tolist()}, {"type": "close"}]
    )
    assert code == 1000 and len(audio) == 5 * 600
    assert app_client.get("/readyz").json()["streams_in_flight"] == 0


@pytest.mark.parametrize("rate", [24000, 16000])
def test_word_timestamps_come_before_their_audio(app_client: TestClient, rate: int) -> None:
    """`words` events: in order, inside the audio, each sent before the audio it describes."""
    text = ["Hello", " there,", " my friend.", " <speak>Wait", '<break time="1s"/>', "now.</speak>"]
    config = {"type": "config", "timestamps": True, "speed": 1.5, "sample_rate": rate}
    messages = [config, *({"type": "text", "text": t} for t in text), {"type": "close"}]
    _, events, audio, code = run_session(app_client, messages)
    assert code == 1000, events
    heard, words, seen = 0, [], 0
    for e in events:
        if isinstance(e, int):
            heard += e // 2
        elif e["type"] == "words":
            assert heard <= e["words"][0]["start"] * rate  # none of its audio was sent yet
            words += e["words"]
            seen += 1
    assert seen == 3 and [w["word"] for w in words] == [
        "Hello",
        "there",
        "my",
        "friend",
        "Wait",
        "now",
    ]
    total = len(audio) / 2 / rate
    starts = [w["start"] for w in words]
    assert starts == sorted(starts) and all(w["start"] < w["end"] for w in words)
    assert all(a["end"] <= b["start"] + 1e-6 for a, b in itertools.pairwise(words))
    assert words[-1]["end"] <= total + 0.02
    # the 1 s break lies between "Wait" and "now"
    assert words[5]["start"] - words[4]["end"] >= 0.95


def test_word_timestamps_are_off_by_default(app_client: TestClient) -> None:
    _, events, _, code = run_session(
        app_client, [{"type": "text", "text": "Hello there."}, {"type": "close"}]
    )
    assert code == 1000 and not [e for e in json_events(events) if e["type"] == "words"]


def test_a_long_first_sentence_starts_before_it_ends(app_client: TestClient) -> None:
    """Its opening clause is spoken as soon as it is complete, while the rest still arrives;
    the sentence sounds the same however it was sent."""
    text = "When the morning train finally arrived at the station, the tired people left."
    tokens = re.findall(r"\s*\S+", text)
    cut = tokens.index(" station,") + 2  # up to the word after "station,"
    with app_client.websocket_connect("/v1/stream") as ws:
        ws.receive_json()  # start
        ws.send_text(json.dumps({"type": "config", "seed": 3}))
        for t in tokens[:cut]:
            ws.send_text(json.dumps({"type": "text", "text": t}))
        first = ws.receive()  # audio, with the sentence's end not sent yet
        assert first.get("bytes"), first
        for t in tokens[cut:]:
            ws.send_text(json.dumps({"type": "text", "text": t}))
        ws.send_text(json.dumps({"type": "close"}))
        audio = first["bytes"]
        while (msg := ws.receive())["type"] != "websocket.close":
            audio += msg.get("bytes") or b""
    assert audio == speak_fragments(app_client, [text])


def test_interleaved_text_and_flush_keep_their_order(app_client: TestClient) -> None:
    texts = ["One.", "Two words here", "And three", "Four, five."]
    messages: list[Any] = []
    for t in texts:
        messages += [{"type": "text", "text": t}, {"type": "flush"}]
    _, events, audio, code = run_session(app_client, [*messages, {"type": "close"}])
    assert code == 1000, events
    flushed = [e["samples"] for e in json_events(events) if e["type"] == "flushed"]
    expected = [
        app_client.post("/v1/synthesize", json={"text": t, "format": "pcm"}).content for t in texts
    ]
    # each flush ends the utterance of the text before it, in order
    assert flushed == list(np.cumsum([len(e) // 2 for e in expected]))
    assert audio == b"".join(expected)
