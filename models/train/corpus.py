"""The training corpus: utterances of `sparrow data`, re-read as it grows, and random crops of
them as batches (the true past as the GRU's inputs); a synthetic corpus for smoke runs."""

from __future__ import annotations

import csv
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from models.dsp.pitch import frame_phases, locked_offsets, mel_pitch, source
from models.vocoder.conditioning import pad_mel
from models.vocoder.config import VocoderConfig
from models.vocoder.excitation import SIGNAL_INPUTS, STEP_INPUTS, excitation_targets, frame_lpc
from models.vocoder.mulaw import preemphasize

logger = logging.getLogger(__name__)


class CorpusError(ValueError):
    """The training corpus is missing or malformed."""


@dataclass
class Utterance:
    id: str
    classes: np.ndarray  # [samples] uint8 mu-law targets: pre-emphasised audio or LPC excitation
    inputs: np.ndarray  # [samples, 3] float32 signal inputs as generation makes them
    mel: np.ndarray  # [frames + 4, n_mels] float32, edge-padded as conditioning.condition does
    pitch: np.ndarray  # [frames, 2] float64 F0 and voicing from the mel (models/dsp/pitch.py)
    phases: np.ndarray  # [frames + 1] float64 sine-source phase at each frame's start
    offsets: np.ndarray  # [frames] float64 phase of the audio's fundamental against that source

    def source(self, first: int, frames: int, config: VocoderConfig) -> np.ndarray:
        """The sine source of frames [first, first + frames), float32 [frames * hop, 2]: the one
        generation feeds the kernel there (same pitch, voicing and frequency), shifted onto the
        recording's own fundamental (pitch.locked_offsets) so that it says when the recording's
        pulses are due."""
        f0, voicing = self.pitch[first : first + frames].T
        offsets = self.offsets[first : first + frames]
        hop, rate = config.hop_length, config.sample_rate
        return source(f0, voicing, hop, rate, self.phases[first], offsets)[0]

    @property
    def usable_frames(self) -> int:
        # The last frame is partial (frames = samples // hop + 1) and interpolates towards itself;
        # crops stop before it so every crop's next-frame conditioning is real data.
        return self.mel.shape[0] - 5


@dataclass
class Corpus:
    """All utterances of one split in memory (the corpus is small: ~1 h of 8-bit classes + mels)."""

    root: Path
    split: str
    config: VocoderConfig
    input_noise: float = 0.0  # LPC only: largest per-utterance Laplace scale of injected slips
    input_ring: float = (
        0.0  # largest per-utterance gamma the slips ring with (excitation.ring_through_lpc)
    )
    utterances: list[Utterance] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)

    def _noise(self, uid: str, size: int) -> tuple[np.ndarray | None, float]:
        """Mu-law slips for one utterance (LPCNet's noise injection; None when off) and the gamma
        they ring with.

        Each utterance draws its own level, uniform in [0, input_noise] mu-law steps, and its own
        gamma, uniform in [0, input_ring], so the net sees clean and bent pasts alike; seeded by
        the id, so a resumed run sees the same data.
        """
        if not (self.input_noise > 0 and self.config.lpc_order):
            return None, 0.0
        rng = np.random.default_rng(zlib.crc32(uid.encode()))
        scale = rng.uniform(0.0, self.input_noise)
        noise = np.rint(rng.laplace(0.0, scale, size)).astype(np.int64)
        return noise, rng.uniform(0.0, self.input_ring) if self.input_ring > 0 else 0.0

    def refresh(self) -> int:
        """Load utterances added to metadata.csv since the last call; returns how many were
        added."""
        meta = self.root / "metadata.csv"
        if not meta.exists():
            raise CorpusError(
                f"no corpus at {self.root} (expected {meta}); run `sparrow data` first"
            )
        with meta.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        added = 0
        hop = self.config.hop_length
        for row in rows:
            uid = row.get("id", "")
            if row.get("split") != self.split or uid in self._seen:
                continue
            wav, mel = self.root / "wav" / f"{uid}.wav", self.root / "mel" / f"{uid}.npy"
            if not (wav.exists() and mel.exists()):
                continue  # still being written: pick it up next refresh
            self._seen.add(uid)
            try:
                audio, sr = sf.read(wav, dtype="float32")
                m = np.load(mel).astype(np.float32)
            except (OSError, ValueError, RuntimeError) as exc:
                logger.warning("skipping %s: %s", uid, exc)
                continue
            if (
                sr != self.config.sample_rate
                or audio.ndim != 1
                or m.shape
                != (
                    audio.shape[0] // hop + 1,
                    self.config.n_mels,
                )
            ):
                logger.warning(
                    "skipping %s: sr=%s audio %s mel %s break the contract",
                    uid,
                    sr,
                    audio.shape,
                    m.shape,
                )
                continue
            target = preemphasize(audio, self.config.preemphasis)
            noise, ring = self._noise(uid, target.size)
            classes, inputs = excitation_targets(
                target, frame_lpc(m, self.config), hop, noise, ring
            )
            pitch = np.stack(mel_pitch(m), axis=1)
            rate = self.config.sample_rate
            phases = frame_phases(pitch[:, 0], hop, rate)
            offsets = locked_offsets(audio, pitch[:, 0], hop, rate)
            utt = Utterance(
                uid, classes.astype(np.uint8), inputs, pad_mel(m), pitch, phases, offsets
            )
            if utt.usable_frames >= 1:
                self.utterances.append(utt)
                added += 1
        return added

    @property
    def frames(self) -> int:
        return sum(u.usable_frames for u in self.utterances)


def sample_batch(
    utts: list[Utterance],
    config: VocoderConfig,
    batch: int,
    crop_frames: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random crops of `crop_frames` frames, utterances drawn in proportion to their length.

    Returns mel [B, crop + 5, n_mels], inputs [B, crop * hop, 5] float32 (excitation.STEP_INPUTS:
    the signal inputs, then the sine source), target [B, crop * hop] int64.
    """
    hop = config.hop_length
    lengths = np.array([max(0, u.usable_frames - crop_frames + 1) for u in utts], np.float64)
    if lengths.sum() == 0:
        raise CorpusError(f"no utterance is longer than {crop_frames + 1} frames")
    picks = rng.choice(len(utts), size=batch, p=lengths / lengths.sum())
    n = crop_frames * hop
    mel = np.empty((batch, crop_frames + 5, config.n_mels), np.float32)
    inputs = np.empty((batch, n, len(STEP_INPUTS)), np.float32)
    target = np.empty((batch, n), np.int64)
    signal = len(SIGNAL_INPUTS)
    for b, i in enumerate(picks):
        u = utts[i]
        first = int(rng.integers(0, u.usable_frames - crop_frames + 1))
        mel[b] = u.mel[first : first + crop_frames + 5]  # padded rows f..f+4 condition frame f
        start = first * hop
        target[b] = u.classes[start : start + n]
        inputs[b, :, :signal] = u.inputs[start : start + n]
        inputs[b, :, signal:] = u.source(first, crop_frames, config)
    return mel, inputs, target


def write_synthetic_corpus(
    root: Path, n_train: int = 6, n_test: int = 2, seconds: float = 0.6, seed: int = 0
) -> Path:
    """A tiny corpus in the `sparrow data` layout for smoke runs and tests: harmonic tones with a
    pitch glide (learnable structure, no Festival needed)."""
    from models.dsp.features import SPEC, log_mel

    (root / "wav").mkdir(parents=True, exist_ok=True)
    (root / "mel").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_train + n_test):
        uid = f"u{i:03d}"
        rate = SPEC.sample_rate
        n = int(seconds * rate) + int(rng.integers(0, SPEC.hop_length))
        t = np.arange(n) / rate
        phase = 2 * np.pi * np.cumsum(120 + 60 * rng.random() + 40 * t) / rate
        # 15 harmonics (to ~2.7 kHz): a comb models/dsp/pitch.py finds in the mel, as in speech
        audio = sum(0.2 / k * np.sin(k * phase) for k in range(1, 16)) + 0.003 * rng.normal(size=n)
        sf.write(root / "wav" / f"{uid}.wav", audio.astype(np.float32), rate, subtype="PCM_16")
        mel = log_mel(
            sf.read(root / "wav" / f"{uid}.wav", dtype="float32")[0]
        )  # of the 16-bit audio
        np.save(root / "mel" / f"{uid}.npy", mel)
        split = "train" if i < n_train else "test"
        rows.append(
            {
                "id": uid,
                "speed": 1.0,
                "samples": n,
                "frames": mel.shape[0],
                "split": split,
                "text": "tone",
            }
        )
    with (root / "metadata.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(
            fh, fieldnames=["id", "speed", "samples", "frames", "split", "text"]
        )
        writer.writeheader()
        writer.writerows(rows)
    return root
