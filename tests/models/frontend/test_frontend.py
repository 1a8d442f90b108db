"""Festival front end, against the real Festival installation (festival + festvox-us-slt-hts)."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from models.dsp.features import SPEC, resample
from models.frontend import tempo
from models.frontend.festival_frontend import (
    EmptyText,
    FestivalFrontend,
    FrontendError,
    FrontendInputError,
    FrontendUnavailable,
    InvalidSpeed,
    Sentence,
    UnknownVoice,
    Voice,
)
from models.frontend.text import normalize

pytestmark = pytest.mark.festival


@pytest.fixture(scope="module")
def fe() -> Iterator[FestivalFrontend]:
    frontend = FestivalFrontend()
    assert frontend.available(), "Festival and festvox-us-slt-hts must be installed for these tests"
    yield frontend
    frontend.close()


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


def _mel_seconds(fe: FestivalFrontend, text_in: str, speed: float = 1.0) -> float:
    frames = sum(m.shape[0] for m in fe.mel_for_text(text_in, speed=speed))
    return frames * SPEC.hop_length / SPEC.sample_rate


def test_speed_range_moves_duration_monotonically(fe: FestivalFrontend) -> None:
    # 0.25-3 is Festival's HTS rate; beyond, the mel is time-scaled (models/tempo.py).
    sentence = "The quick brown fox jumps over the lazy dog."
    normal = _mel_seconds(fe, sentence)
    seconds = {speed: _mel_seconds(fe, sentence, speed) for speed in (0.25, 0.5, 2.0, 4.0)}
    seconds[1.0] = normal
    ordered = [seconds[s] for s in sorted(seconds)]
    assert ordered == sorted(ordered, reverse=True)
    for speed, secs in seconds.items():
        assert secs / normal == pytest.approx(1.0 / speed, rel=0.12), (speed, secs, normal)
    assert tempo.split_speed(4.0)[1] > 1.0  # the fastest speed does use the mel time-scale


def test_synthesize_stops_where_the_hts_rate_does(fe: FestivalFrontend) -> None:
    with pytest.raises(InvalidSpeed, match="mel"):
        fe.synthesize("Hello.", speed=4.0)


def test_markdown_speaks_like_plain_text(fe: FestivalFrontend) -> None:
    assert fe.plan("**Hello** there.") == fe.plan("Hello there.") == [Sentence("Hello there.", 1.0)]
    marked, plain = _mel_seconds(fe, "**Hello** there."), _mel_seconds(fe, "Hello there.")
    assert marked == pytest.approx(plain, abs=0.05)


def test_markdown_link_speaks_its_text_not_its_url(fe: FestivalFrontend) -> None:
    url = "https://docs.example.com/guide/install"
    link = _mel_seconds(fe, f"Read [the guide]({url}) first.")
    text_only = _mel_seconds(fe, "Read the guide first.")
    spelt = _mel_seconds(fe, "Read the guide " + " ".join(url.replace("/", "")) + " first.")
    assert link == pytest.approx(text_only, rel=0.05)
    assert spelt > 3 * link


def test_ssml_break_is_real_silence(fe: FestivalFrontend) -> None:
    plain = list(fe.mel_for_text("<speak>Hello there.</speak>"))
    paused = list(fe.mel_for_text('<speak>Hello <break time="1s"/> there.</speak>'))
    assert len(plain) == 1 and len(paused) == 3
    extra = (sum(m.shape[0] for m in paused) - plain[0].shape[0]) * SPEC.hop_length
    assert extra / SPEC.sample_rate == pytest.approx(1.0, abs=0.35)
    whole = np.concatenate(paused)
    floor = np.log(SPEC.log_floor)
    silent = np.all(np.isclose(whole, floor, atol=1e-4), axis=1)
    # One run of 80 frames (1 s) at the log floor, between speech on both sides.
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], silent.astype(int), [0]]))))[::2]
    assert list(runs) == [80]
    assert whole[: paused[0].shape[0]].max() > -2.0 and paused[2].max() > -2.0


def test_ssml_prosody_slows_its_words(fe: FestivalFrontend) -> None:
    plain = _mel_seconds(fe, "Hello there.")
    slow = _mel_seconds(fe, '<speak><prosody rate="x-slow">Hello there.</prosody></speak>')
    assert slow / plain == pytest.approx(2.0, rel=0.12)


def test_markup_only_text_is_empty_before_synthesis(fe: FestivalFrontend) -> None:
    for text_in in ('<speak><break time="2s"/></speak>', "**\U0001f389**", "```\nprint(1)\n```"):
        with pytest.raises(EmptyText):
            fe.mel_for_text(text_in)


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


@pytest.mark.parametrize("speed", [0.24, 4.01, 0.0, -1.0, float("nan"), float("inf"), "fast"])
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
    missing = FestivalFrontend(festival="sparrow-no-such-festival")
    assert not missing.available() and missing.voices() == []
    with pytest.raises(FrontendUnavailable, match="festival festvox-us-slt-hts"):
        missing.synthesize("Hello.")


def test_missing_voice_names_the_packages(tmp_path: Path) -> None:
    no_voice = FestivalFrontend(voices_roots=(tmp_path,))
    assert not no_voice.available() and no_voice.voices() == []
    with pytest.raises(FrontendUnavailable, match="festvox-us-slt-hts"):
        no_voice.mel_for_text("Hello.")


def test_same_audio_as_text2wave(fe: FestivalFrontend, tmp_path: Path) -> None:
    # The warm process speaks what a fresh `text2wave` does, bit for bit: here text Festival cuts
    # into several utterances (joined; `synthesize` does not split), at a speed, after requests
    # at other speeds on the same process (each request's speed replaces the last one's).
    sentence = "Dr. Smith paid 3.50 dollars at 10:30. Then he left! Really? Yes"
    fe.synthesize("Warm up.", speed=0.5)
    ours = fe.synthesize(sentence, speed=1.3)
    fe.synthesize("Something else.", speed=2.0)
    again = fe.synthesize(sentence, speed=1.3)
    txt, wav = tmp_path / "in.txt", tmp_path / "out.wav"
    txt.write_text(normalize(sentence) + "\n")
    subprocess.run(
        [
            "text2wave",
            "-mode",
            "fundamental",
            "-eval",
            "(voice_cmu_us_slt_arctic_hts)",
            "-eval",
            '(set! hts_engine_params (cons (list "-r" 1.3000) hts_engine_params))',
            "-o",
            str(wav),
            str(txt),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "LC_ALL": "C"},
    )
    ref, sr = sf.read(str(wav), dtype="float32")
    expected = resample(ref, sr, SPEC.sample_rate)
    assert _seconds(ours) > 4.0
    np.testing.assert_array_equal(ours, expected)
    np.testing.assert_array_equal(again, expected)


def _script(tmp_path: Path, body: str, name: str = "fake-festival") -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _festival_loading(tmp_path: Path, scheme: str, log: Path | None = None) -> str:
    """Real Festival that loads `scheme` before it reads our pipe (and logs starts to `log`)."""
    extra = tmp_path / "extra.scm"
    extra.write_text(scheme + "\n")
    start = f"echo start >> {log}; " if log else ""
    return _script(tmp_path, f'{start}exec festival "$@" {extra}', "festival-with-extra")


def test_festival_failure_is_a_frontend_error(tmp_path: Path) -> None:
    # Festival that dies at start, that reports a Scheme error while speaking (it would carry on:
    # we do not), and that writes no audio.
    for binary in (
        _script(tmp_path, "echo boom >&2; exit 3"),
        _festival_loading(tmp_path, "(define (utt.synth utt) (sparrow_no_such_function utt))"),
        _festival_loading(tmp_path, "(define (tts_file file mode) nil)"),
    ):
        broken = FestivalFrontend(festival=binary)
        with pytest.raises(FrontendError):
            broken.synthesize("Hello.")
        broken.close()


def test_festival_timeout_is_a_frontend_error(tmp_path: Path) -> None:
    slow = FestivalFrontend(festival=_script(tmp_path, "exec sleep 10"), timeout_s=0.3)
    with pytest.raises(FrontendError, match="timed out"):
        slow.synthesize("Hello.")


def test_hung_festival_is_killed_and_replaced(tmp_path: Path) -> None:
    # Festival that hangs on the text: each sentence times out, its process is killed (not left
    # spinning) and the pool's one place is free again for a fresh process.
    log = tmp_path / "starts"
    binary = _festival_loading(tmp_path, "(define (tts_file file mode) (while t nil))", log)
    hung = FestivalFrontend(festival=binary, timeout_s=1.0, processes=1)
    for _ in range(2):
        with pytest.raises(FrontendError, match="timed out"):
            hung.synthesize("Hello.")
    assert log.read_text().count("start") == 2
    assert _festival_children(tmp_path) == []
    hung.close()


def _festival_children(tmp_path: Path) -> list[int]:
    """Pids of this test process's live children whose command line names `tmp_path` (so the
    module's shared front end does not count)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat_fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue  # exited meanwhile
        state, ppid = stat_fields[0], int(stat_fields[1])
        if ppid == os.getpid() and state != "Z" and str(tmp_path) in cmdline:
            pids.append(int(proc.name))
    return pids


def test_processes_are_reused_warm_and_closed(tmp_path: Path) -> None:
    log = tmp_path / "starts"
    warm = FestivalFrontend(festival=_festival_loading(tmp_path, "", log))
    assert warm.warm_up()
    assert log.read_text().count("start") == 1
    mels = list(warm.mel_for_text("One. Two. Three. Four."))
    warm.synthesize("And five.", speed=1.5)
    assert len(mels) == 4 and log.read_text().count("start") == 1  # the warm process did all
    (pid,) = _festival_children(tmp_path)
    workdir = Path(os.readlink(f"/proc/{pid}/cwd"))  # the process's own temporary directory
    assert workdir.name.startswith("sparrow-festival-") and workdir.is_dir()
    warm.close()
    assert _festival_children(tmp_path) == [] and not workdir.exists()


def test_concurrent_texts_share_at_most_the_pool(tmp_path: Path) -> None:
    log = tmp_path / "starts"
    shared = FestivalFrontend(festival=_festival_loading(tmp_path, "", log), processes=2)
    errors: list[BaseException] = []

    def speak(i: int) -> None:
        try:
            assert len(list(shared.mel_for_text(f"Sentence {i}. And another one."))) == 2
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=speak, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert 1 <= log.read_text().count("start") <= 2
    shared.close()


def test_mel_for_text_is_lazy(tmp_path: Path) -> None:
    # Real Festival behind a wrapper that copies what we send it.
    sent = tmp_path / "sent"
    lazy = FestivalFrontend(festival=_script(tmp_path, f'tee -a {sent} | festival "$@"'))
    gen = lazy.mel_for_text("One. Two. Three.")
    assert not sent.exists()  # validated, nothing synthesised (nor started) yet
    next(gen)
    assert sent.read_text().count("tts_file") == 1
    assert len(list(gen)) == 2
    assert sent.read_text().count("tts_file") == 3
    lazy.close()


def test_festival_runs_at_the_niceness_asked_for(tmp_path: Path) -> None:
    # Real Festival behind a wrapper that records the priority it was started with.
    seen = tmp_path / "niceness"
    wrapper = _script(tmp_path, f'nice > {seen}; exec festival "$@"')
    base = os.nice(0)
    for niceness, expected in ((7, min(base + 7, 19)), (0, base)):
        frontend = FestivalFrontend(festival=wrapper, niceness=niceness)
        frontend.synthesize("Hello.")
        frontend.close()
        assert int(seen.read_text()) == expected
