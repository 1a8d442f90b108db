"""Request models: mel forms, exactly-one-of, unknown fields, websocket message parsing."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from pydantic import ValidationError

from models.dsp.features import MelInputError
from server.errors import InvalidInput
from server.schemas import (
    MelData,
    SpeechRequest,
    SynthesizeRequest,
    WsMel,
    WsText,
    mel_to_array,
)
from server.streaming import parse_message


def test_mel_forms_agree() -> None:
    mel = np.arange(160, dtype=np.float32).reshape(2, 80) / -100
    b64 = MelData(data=base64.b64encode(mel.astype("<f4").tobytes()).decode(), shape=(2, 80))
    np.testing.assert_array_equal(b64.to_array(), mel)
    np.testing.assert_array_equal(mel_to_array(mel.tolist()), mel)


@pytest.mark.parametrize(
    ("data", "shape", "match"),
    [
        ("!!!", (1, 80), "not valid base64"),
        (base64.b64encode(b"\0" * 8).decode(), (1, 80), "needs 320"),
    ],
)
def test_bad_base64_mel(data: str, shape: tuple[int, int], match: str) -> None:
    with pytest.raises(MelInputError, match=match):
        MelData(data=data, shape=shape).to_array()


def test_ragged_mel_rows() -> None:
    with pytest.raises(MelInputError, match="different lengths"):
        mel_to_array([[0.0] * 80, [0.0] * 79])


def test_exactly_one_input_and_no_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        SynthesizeRequest()
    with pytest.raises(ValidationError, match="exactly one"):
        SynthesizeRequest(text="hi", mel=[[0.0] * 80])
    with pytest.raises(ValidationError, match="Extra inputs"):
        SynthesizeRequest.model_validate({"text": "hi", "sed": 1})
    with pytest.raises(ValidationError, match="format"):
        SynthesizeRequest.model_validate({"text": "hi", "format": "wma"})
    with pytest.raises(ValidationError, match="seed"):
        SynthesizeRequest.model_validate({"text": "hi", "seed": -1})


def test_speech_request_defaults_as_openai() -> None:
    r = SpeechRequest(model="tts-1", input="Hello")
    assert (r.response_format, r.voice, r.stream_format) == ("mp3", "slt", "audio")
    assert (r.speed, r.sample_rate, r.instructions) == (1.0, 24000, None)
    with pytest.raises(ValidationError, match="input is empty"):
        SpeechRequest(model="tts-1", input="   ")


def test_ws_messages() -> None:
    assert parse_message('{"type": "flush"}').type == "flush"
    msg = parse_message('{"type": "mel", "mel": [[0.5, 1.5]]}')
    assert isinstance(msg, WsMel) and msg.to_array().shape == (1, 2)
    for bad, match in [
        ("{", "not valid JSON"),
        ('{"type": "dance"}', "type"),
        ('{"type": "mel"}', "either 'mel'"),
        ('{"type": "mel", "data": "AAAA"}', "needs 'shape'"),
        ('{"type": "config", "seed": "x"}', "seed"),
        ('{"type": "flush", "now": true}', "now: Extra inputs"),
        ('{"type": "config", "speed": NaN}', "speed: Input should be a finite number"),
        ('{"type": "config", "seed": true}', "seed: Input should be a valid integer"),
        ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    ]:
        with pytest.raises(InvalidInput, match=match):
            parse_message(bad)
    # What the HTTP routes accept, as json.loads does: a lone surrogate escape is JSON.
    lone = parse_message('{"type": "text", "text": "Hi \\ud800 there."}')
    assert isinstance(lone, WsText) and lone.text == "Hi \ud800 there."
