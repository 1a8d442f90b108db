"""`sparrow data`: build the offline training corpus (wav + log-mel + metadata) with Festival.

Layout of the output directory (default data/corpus):

    wav/<id>.wav      24 kHz mono 16-bit PCM, exactly what Festival said, resampled from 32 kHz
    mel/<id>.npy      float32 [frames, 80] log-mel of that 16-bit audio (models/dsp/features.py)
    metadata.csv      id,speed,samples,frames,split,text   (text = the normalised text spoken)

Each sentence's speed is drawn from SPEEDS by a generator seeded with (seed, sentence index), and
every 50th sentence is held out as `test`, so the corpus is a pure function of the sentence list.

Usable while it grows: a row is appended to metadata.csv (and flushed) only after both of its
files are complete, and files are written under a temporary name then renamed. Resumable: items
whose files exist are not synthesised again. At the end metadata.csv is rewritten in id order.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import logging
import multiprocessing.util
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import soundfile as sf

from models.dsp import features
from models.frontend import text
from models.frontend.festival_frontend import FestivalFrontend, FrontendError, FrontendUnavailable

logger = logging.getLogger(__name__)

SPEEDS = (0.8, 0.9, 1.0, 1.1, 1.2)
TEST_EVERY = 50  # every 50th sentence (2%) is the held-out test split
FIELDS = ("id", "speed", "samples", "frames", "split", "text")


@dataclass(frozen=True)
class Item:
    index: int
    id: str
    text: str
    speed: float
    split: str


def default_sentences_path() -> Path:
    return Path(str(resources.files("models") / "data" / "sentences.txt"))


def read_sentences(path: Path) -> list[str]:
    """Non-empty lines that are not `#` comments, in file order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def speed_for(index: int, seed: int = 0) -> float:
    return float(np.random.default_rng([seed, index]).choice(SPEEDS))


def plan(sentences: list[str], seed: int = 0) -> list[Item]:
    """Ids, speeds and splits for every sentence: depends only on the list and the seed."""
    width = max(5, len(str(len(sentences))))
    items = []
    for i, sentence in enumerate(sentences):
        split = "test" if (i + 1) % TEST_EVERY == 0 else "train"
        items.append(
            Item(i, f"s{i:0{width}d}", text.normalize(sentence), speed_for(i, seed), split)
        )
    return items


def _paths(out: Path, item_id: str) -> tuple[Path, Path]:
    return out / "wav" / f"{item_id}.wav", out / "mel" / f"{item_id}.npy"


def _row(item: Item, samples: int, frames: int) -> dict[str, str]:
    return {
        "id": item.id,
        "speed": f"{item.speed:.1f}",
        "samples": str(samples),
        "frames": str(frames),
        "split": item.split,
        "text": item.text,
    }


def _existing_row(out: Path, item: Item) -> dict[str, str] | None:
    """The row of an item whose files are both complete, else None."""
    wav, mel = _paths(out, item.id)
    if not (wav.is_file() and mel.is_file()):
        return None
    try:
        samples = sf.info(str(wav)).frames
        frames = np.load(mel, mmap_mode="r").shape[0]
    except (RuntimeError, ValueError, OSError):
        return None  # unreadable: synthesise again
    return _row(item, samples, frames)


@functools.cache
def _frontend() -> FestivalFrontend:
    """One front end per worker process, so its one warm Festival speaks all the worker's items."""
    frontend = FestivalFrontend(processes=1)
    # Pool workers leave through os._exit, which skips atexit (and so weakref.finalize); this
    # runs as the worker exits, and removes Festival's temporary directory.
    multiprocessing.util.Finalize(frontend, frontend.close, exitpriority=10)
    return frontend


def synthesize_item(out: Path, item: Item) -> dict[str, str]:
    """Worker: speak one item and write its wav and mel atomically. Returns its metadata row."""
    audio = _frontend().synthesize(item.text, voice="slt", speed=item.speed)
    # The mel is computed from the 16-bit audio exactly as a reader of the wav will see it.
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)
    audio16 = pcm.astype(np.float32) / 32768.0
    mel = features.log_mel(audio16)
    wav_path, mel_path = _paths(out, item.id)
    tmp_wav = wav_path.with_suffix(".wav.tmp")
    sf.write(str(tmp_wav), pcm, features.SPEC.sample_rate, subtype="PCM_16", format="WAV")
    os.replace(tmp_wav, wav_path)
    tmp_mel = mel_path.with_suffix(".npy.tmp")
    with tmp_mel.open("wb") as f:
        np.save(f, mel)
    os.replace(tmp_mel, mel_path)  # mel last: its presence means the item is complete
    return _row(item, int(pcm.size), int(mel.shape[0]))


def _csv_line(row: dict[str, str]) -> str:
    buf = io.StringIO()
    csv.DictWriter(buf, FIELDS, lineterminator="\n").writerow(row)
    return buf.getvalue()


def _write_metadata(out: Path, rows: list[dict[str, str]]) -> None:
    tmp = out / "metadata.csv.tmp"
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["id"]))
    os.replace(tmp, out / "metadata.csv")


class _Progress:
    """One status line on stderr: redrawn in place on a terminal, every 30 s in a log file."""

    def __init__(self, total: int, already: int) -> None:
        self.total, self.done, self.start = total, already, time.monotonic()
        self.first, self.audio_s, self.last_print = already, 0.0, 0.0
        self.tty = sys.stderr.isatty()

    def update(self, audio_s: float) -> None:
        self.done += 1
        self.audio_s += audio_s
        now = time.monotonic()
        if self.tty or now - self.last_print >= 30.0 or self.done == self.total:
            self.last_print = now
            elapsed = now - self.start
            rate = (self.done - self.first) / max(elapsed, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            line = (
                f"[{self.done}/{self.total}] {100.0 * self.done / self.total:5.1f}%  "
                f"{self.audio_s / 3600:.2f} h new audio  {rate:.2f} sent/s  "
                f"x{self.audio_s / max(elapsed, 1e-9):.1f} real time  eta {eta / 60:.1f} min"
            )
            sys.stderr.write(("\r" + line) if self.tty else (line + "\n"))
            sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def build(out: Path, sentences: list[str], jobs: int = 2, seed: int = 0) -> tuple[int, int, float]:
    """Generate the corpus into `out`. Returns (items synthesised now, failures, hours of audio)."""
    items = plan(sentences, seed)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    (out / "mel").mkdir(parents=True, exist_ok=True)
    frontend = FestivalFrontend()
    if not frontend.available("slt"):
        raise FrontendUnavailable(
            "Festival with the slt voice is needed: apt-get install festival festvox-us-slt-hts"
        )

    rows: dict[str, dict[str, str]] = {}
    todo: list[Item] = []
    for item in items:
        row = _existing_row(out, item)
        if row is None:
            todo.append(item)
        else:
            rows[item.id] = row
    # Start from a metadata.csv listing exactly the complete items, then append as items finish.
    _write_metadata(out, list(rows.values()))
    logger.info(
        "corpus %s: %d sentences, %d done, %d to synthesise with %d jobs",
        out,
        len(items),
        len(rows),
        len(todo),
        jobs,
    )

    failures = 0
    progress = _Progress(len(items), len(rows))
    with (
        (out / "metadata.csv").open("a", newline="", encoding="utf-8") as meta,
        ProcessPoolExecutor(max_workers=jobs) as pool,
    ):
        pending: dict[Future[dict[str, str]], Item] = {}
        queue = iter(todo)

        def submit_next() -> None:
            item = next(queue, None)
            if item is not None:
                pending[pool.submit(synthesize_item, out, item)] = item

        # Bounded look-ahead keeps memory flat and lets Ctrl-C stop quickly.
        for _ in range(2 * jobs):
            submit_next()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                item = pending.pop(fut)
                try:
                    row = fut.result()
                except (FrontendError, ValueError) as exc:
                    failures += 1
                    logger.warning("skipping %s (%r): %s", item.id, item.text[:60], exc)
                    progress.update(0.0)
                else:
                    rows[item.id] = row
                    meta.write(_csv_line(row))
                    meta.flush()
                    progress.update(int(row["samples"]) / features.SPEC.sample_rate)
                submit_next()
    progress.close()
    _write_metadata(out, list(rows.values()))
    total_s = sum(int(r["samples"]) for r in rows.values()) / features.SPEC.sample_rate
    return len(todo) - failures, failures, total_s / 3600.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("data/corpus"),
        help="output directory (default: data/corpus)",
    )
    parser.add_argument(
        "--sentences",
        type=Path,
        default=None,
        help="sentence list, one per line, # comments (default: the bundled list)",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="use only the first N sentences (quick runs)"
    )
    parser.add_argument("--jobs", type=int, default=2, help="parallel Festival workers (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-sentence speeds")


def run(args: argparse.Namespace) -> int:
    path = args.sentences or default_sentences_path()
    try:
        sentences = read_sentences(path)
    except OSError as exc:
        print(f"sparrow data: cannot read sentences: {exc}", file=sys.stderr)
        return 2
    if args.limit is not None:
        if args.limit < 1:
            print("sparrow data: --limit must be at least 1", file=sys.stderr)
            return 2
        sentences = sentences[: args.limit]
    if args.jobs < 1:
        print("sparrow data: --jobs must be at least 1", file=sys.stderr)
        return 2
    if not sentences:
        print(f"sparrow data: no sentences in {path}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        made, failed, hours = build(args.out, sentences, jobs=args.jobs, seed=args.seed)
    except FrontendUnavailable as exc:
        print(f"sparrow data: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sparrow data: interrupted; run again to resume", file=sys.stderr)
        return 130
    minutes = (time.monotonic() - started) / 60.0
    print(
        f"sparrow data: {made} new items, {failed} failed, corpus {args.out} holds "
        f"{hours:.2f} h of audio ({minutes:.1f} min)",
        file=sys.stderr,
    )
    return 1 if failed else 0
