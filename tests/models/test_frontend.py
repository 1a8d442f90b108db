"""Festival front end, against the real Festival installation (festival + festvox-us-slt-hts)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from models.features import SPEC
from models.frontend import (
    EmptyText,
    FestivalFrontend,
    FrontendError,
    FrontendInputError,
    FrontendUnavailable,
    InvalidSpeed,
    UnknownVoice,
    Voice,
)


@pytest.fixture(scope="module")
def fe() -> FestivalFrontend:
    frontend = FestivalFrontend()
    assert frontend.available(), "Festival and festvox-us-slt-hts must be installed for these tests"
    return frontend


def _seconds(audio: np.ndarray) -> float:
    return audio.size / SPEC.sample_rate


def test_voices(fe: FestivalFrontend) -> None:
    voices = fe.voices()
    assert Voice("slt", voices[0].name, "en-US", 24_000) == voices[0]
    assert [v.id for v in voices] == ["slt"]


def test_synthesize_returns_24k_float_audio(fe: FestivalFrontend) -> None:
    audio = fe.synthesize("Hello world, this is a test.")
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 1.0 < _seconds(audio) < 5.0
    assert 0.05 < np.abs(audio).max() <= 1.0


def test_scheme_in_user_text_is_spoken_not_executed(fe: FestivalFrontend, tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    hostile = (
        f'(system "touch {target}") (quit) "quotes"; semi; colons: \\ back\\slash '
        f'(format t "hi") #t \'(a . b) `x ,y {{braces}} [brackets] ) ) ('
    )
    audio = fe.synthesize(hostile)
    assert not target.exists()
    # About 25 spoken words: several seconds of sound, not an empty or truncated result.
    assert _seconds(audio) > 4.0
    assert np.abs(audio).max() > 0.05
    mels = list(fe.mel_for_text(f'Then (system "touch {target}"). And "more"; text.'))
    assert len(mels) == 2 and not target.exists()


def test_speed_changes_duration(fe: FestivalFrontend) -> None:
    sentence = "The quick brown fox jumps over the lazy dog near the river bank."
    normal = _seconds(fe.synthesize(sentence, speed=1.0))
    fast = _seconds(fe.synthesize(sentence, speed=2.0))
    slow = _seconds(fe.synthesize(sentence, speed=0.5))
    assert fast / normal == pytest.approx(0.5, rel=0.1)
    assert slow / normal == pytest.approx(2.0, rel=0.1)


def test_mel_for_text_yields_one_mel_per_sentence(fe: FestivalFrontend) -> None:
    gen = fe.mel_for_text("First sentence. The second one is a little longer! Third?")
    first = next(gen)  # available before the remaining sentences are synthesised
    assert first.dtype == np.float32 and first.shape[1] == 80 and first.shape[0] > 40
    rest = list(gen)
    assert len(rest) == 2
    assert rest[0].shape[0] > first.shape[0]
    for mel in [first, *rest]:
        assert np.all(np.isfinite(mel)) and mel.max() > -5.0  # speech, not only the log floor


def test_sentences_are_normalised_and_bounded(fe: FestivalFrontend) -> None:
    long_text = "word " * 400 + "... !! And 42 more."
    chunks = fe.sentences(long_text)
    assert all(len(c) <= fe.max_sentence_chars for c in chunks)
    assert chunks[-1] == "And forty two more."
    assert " ".join(chunks).split().count("word") == 400


def test_unknown_voice(fe: FestivalFrontend) -> None:
    with pytest.raises(UnknownVoice, match="slt"):
        fe.synthesize("Hello.", voice="nobody")
    with pytest.raises(UnknownVoice):
        fe.mel_for_text("Hello.", voice="../../etc")  # raised at call time, not on first next()
    assert issubclass(UnknownVoice, FrontendInputError) and issubclass(UnknownVoice, ValueError)


@pytest.mark.parametrize("speed", [0.49, 2.01, 0.0, -1.0, float("nan"), float("inf"), "fast"])
def test_invalid_speed(fe: FestivalFrontend, speed: object) -> None:
    with pytest.raises(InvalidSpeed):
        fe.mel_for_text("Hello.", speed=speed)  # type: ignore[arg-type]


def test_nothing_to_speak(fe: FestivalFrontend) -> None:
    with pytest.raises(EmptyText):
        fe.mel_for_text(" ... !? -- ")
    with pytest.raises(EmptyText):
        fe.synthesize("\u4e2d\u6587")
    # Punctuation-only chunks inside real text are skipped, not sent to Festival.
    assert len(list(fe.mel_for_text("Hello. ... World."))) == 2


def test_missing_binary_names_the_packages() -> None:
    missing = FestivalFrontend(text2wave="sparrow-no-such-text2wave")
    assert not missing.available() and missing.voices() == []
    with pytest.raises(FrontendUnavailable, match="festival festvox-us-slt-hts"):
        missing.synthesize("Hello.")


def test_missing_voice_names_the_packages(tmp_path: Path) -> None:
    no_voice = FestivalFrontend(voices_roots=(tmp_path,))
    assert not no_voice.available() and no_voice.voices() == []
    with pytest.raises(FrontendUnavailable, match="festvox-us-slt-hts"):
        no_voice.mel_for_text("Hello.")


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake-text2wave"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_festival_failure_is_a_frontend_error(tmp_path: Path) -> None:
    # A stand-in for a broken Festival install: exits non-zero, or exits 0 with a Scheme error
    # (real text2wave does the latter), or writes no audio.
    for body in (
        "echo boom >&2; exit 3",
        "echo 'SIOD ERROR: unbound variable' >&2; exit 0",
        "exit 0",
    ):
        broken = FestivalFrontend(text2wave=_script(tmp_path, body))
        with pytest.raises(FrontendError):
            broken.synthesize("Hello.")


def test_festival_timeout_is_a_frontend_error(tmp_path: Path) -> None:
    slow = FestivalFrontend(text2wave=_script(tmp_path, "exec sleep 10"), timeout_s=0.3)
    with pytest.raises(FrontendError, match="timed out"):
        slow.synthesize("Hello.")


def test_mel_for_text_is_lazy(tmp_path: Path) -> None:
    # Real Festival behind a wrapper that counts its calls.
    calls = tmp_path / "calls"
    counting = FestivalFrontend(
        text2wave=_script(tmp_path, f'echo x >> {calls}; exec text2wave "$@"')
    )
    gen = counting.mel_for_text("One. Two. Three.")
    assert not calls.exists()  # validated, nothing synthesised yet
    next(gen)
    assert calls.read_text().count("x") == 1
    assert len(list(gen)) == 2
    assert calls.read_text().count("x") == 3


def test_festival_runs_at_the_niceness_asked_for(tmp_path: Path) -> None:
    # Real Festival behind a wrapper that records the priority it was started with.
    seen = tmp_path / "niceness"
    wrapper = _script(tmp_path, f'nice > {seen}; exec text2wave "$@"')
    base = os.nice(0)
    FestivalFrontend(text2wave=wrapper, niceness=7).synthesize("Hello.")
    assert int(seen.read_text()) == min(base + 7, 19)
    FestivalFrontend(text2wave=wrapper).synthesize("Hello.")
    assert int(seen.read_text()) == base
