"""Where a text's first audio waits in the front end: Festival per word count, the mel, the first
piece of a text, each the minimum and median of N warm runs.

Run from the repository root, pinned to one core (the machine may be shared: read the minima):
`taskset -c 1 python scripts/frontend_timing.py [--runs 30] [--text "..."] [--first-words 4]`.
Needs Festival and the slt HTS voice. What it prints is what models/frontend/plan.py's
FIRST_WORDS is chosen from: Festival's time for the opening and its context word, next to the
other stages of the path (the vocoder's opening and the server's share are measured with
`sparrow loadtest --text`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from models.dsp import features
from models.frontend import text
from models.frontend.festival import FestivalProcess
from models.frontend.festival_frontend import FIRST_WORDS, VOICES, FestivalFrontend

TEXT = (
    "When the morning train pulled into the station, the passengers hurried through the crowded "
    "hall towards the exit gates. Then they went home."
)


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, float, Any]:
    """(min ms, median ms, last result) of `runs` calls."""
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return min(times), statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--text", default=TEXT)
    parser.add_argument("--first-words", type=int, default=FIRST_WORDS)
    args = parser.parse_args()
    voice = VOICES["slt"].scheme_name
    fe = FestivalFrontend(opening_words=args.first_words)
    proc = FestivalProcess(fe.festival)
    try:
        proc.use_voice(voice, 60.0)
        sentence = text.split_sentences(text.normalize(args.text), text.MAX_SENTENCE_CHARS)[0]
        words = sentence.split(" ")
        whole = " ".join(words)
        for n in sorted({2, 3, 4, 5, 6, 8, 10, 12, len(words)}):
            if n > len(words):
                continue
            piece = " ".join(words[:n])
            lo, med, (audio, sr, _) = timed(
                lambda p=piece: proc.speak_timed(p, voice, 1.0, 60.0), args.runs
            )
            print(
                f"Festival, {n:2d} words:  min {lo:6.1f}  median {med:6.1f} ms  ({audio.size / sr:.2f} s)"
            )
        audio, sr, _ = proc.speak_timed(whole, voice, 1.0, 60.0)
        lo, med, audio24 = timed(
            lambda: features.resample(audio, sr, features.SPEC.sample_rate), args.runs
        )
        print(f"resample {sr} -> {features.SPEC.sample_rate}:  min {lo:6.2f}  median {med:6.2f} ms")
        lo, med, mel = timed(lambda: features.log_mel(audio24), args.runs)
        print(f"log-mel, {mel.shape[0]} frames:  min {lo:6.2f}  median {med:6.2f} ms")
        fe.warm_up()
        first = fe.plan(args.text)[0]
        lo, med, _ = timed(lambda: next(iter(fe.spoken_for_text(args.text))), args.runs)
        print(f"first piece {first.spoken_text!r} -> mel:  min {lo:6.1f}  median {med:6.1f} ms")
    finally:
        proc.close()
        fe.close()


if __name__ == "__main__":
    main()
