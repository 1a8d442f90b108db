"""`sparrow train`: teacher-forced WaveRNN training with gradual block pruning, on CPU.

Reads the corpus written by `sparrow data` (data/corpus/metadata.csv, wav/<id>.wav, mel/<id>.npy),
re-reading metadata.csv every few minutes so training can start while the corpus still grows.
Each step takes random crops of a few mel frames (plus the conditioning context around them),
runs the GRU over the crop's samples with the true past as input (previous sample, linear
prediction, previous excitation: excitation.excitation_targets), and minimises
cross-entropy over the 256 mu-law classes. W_hh, FC1 and FC2 are pruned to `config.density` in
blocks of `(block_rows, block_cols)` on a cubic schedule; masks are re-applied after every step.

Schedules (learning rate, pruning) run on `progress` in [0, 1]: the share of `--steps` done, or of
the time budget (`--max-minutes` plus time already trained when resuming), whichever is further.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import math
import os
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

from models.argtypes import bounded
from models.dsp.pitch import frame_phases, locked_offsets, mel_pitch, source
from models.train.wavernn import SAMPLE_GAIN, WaveRNN, to_reference_weights, widen_input_columns
from models.vocoder.conditioning import pad_mel
from models.vocoder.config import TINY, VocoderConfig
from models.vocoder.excitation import SIGNAL_INPUTS, STEP_INPUTS, excitation_targets, frame_lpc
from models.vocoder.mulaw import preemphasize
from models.vocoder.params import SPARSE_WEIGHTS
from models.vocoder.sparsity import block_norms, grow_block_mask, magnitude_block_mask

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
DOMAIN_FIELDS = ("preemphasis", "lpc_order", "lpc_noise_floor")
"""VocoderConfig fields a run may change on --resume: they change the targets, not the net's shape."""
CARRIED_SETTINGS = ("input_noise", "input_ring")
"""Training settings (not model fields) a plain --resume takes from the checkpoint's args; 0 = off."""


class CorpusError(ValueError):
    """The training corpus is missing or malformed."""


class GrowthError(ValueError):
    """--grow-density that cannot grow the run it resumes (none, one still pruning, or one not
    below the new density)."""


# --- data ------------------------------------------------------------------------------------------


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
    input_ring: float = 0.0  # largest per-utterance gamma the slips ring with (excitation.ring_through_lpc)
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
        """Load utterances added to metadata.csv since the last call; returns how many were added."""
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
            classes, inputs = excitation_targets(target, frame_lpc(m, self.config), hop, noise, ring)
            pitch = np.stack(mel_pitch(m), axis=1)
            rate = self.config.sample_rate
            phases = frame_phases(pitch[:, 0], hop, rate)
            offsets = locked_offsets(audio, pitch[:, 0], hop, rate)
            utt = Utterance(uid, classes.astype(np.uint8), inputs, pad_mel(m), pitch, phases, offsets)
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


# --- schedules and pruning -------------------------------------------------------------------------


def cubic_density(progress: float, target: float, start: float, end: float) -> float:
    """Density 1.0 until `start`, then target + (1 - target) * (1 - x)^3 with x going 0 -> 1 at `end`."""
    if progress <= start:
        return 1.0
    x = min(1.0, (progress - start) / max(end - start, 1e-9))
    return target + (1.0 - target) * (1.0 - x) ** 3


def learning_rate(progress: float, step: int, peak: float, warmup: int, final: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay from `peak` to `final` over progress."""
    warm = min(1.0, (step + 1) / max(warmup, 1))
    cos = final + 0.5 * (peak - final) * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return warm * cos


class Pruner:
    """Block-magnitude masks for the sparse matrices; applied after every optimizer step."""

    def __init__(self, model: WaveRNN, config: VocoderConfig) -> None:
        self.params = model.sparse_parameters()
        self.block = (config.block_rows, config.block_cols)
        self.masks = {k: torch.ones_like(p) for k, p in self.params.items()}
        self.density = 1.0

    def update(self, density: float) -> None:
        """Recompute masks from the current magnitudes at `density` (kept blocks only shrink in number)."""
        self.density = density
        if density >= 1.0:
            return
        for k, p in self.params.items():
            w = p.detach().float().numpy()
            self.masks[k] = torch.from_numpy(magnitude_block_mask(w, self.block, density))
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        for k, p in self.params.items():
            p.mul_(self.masks[k])

    def grow(self, density: float, scores: dict[str, np.ndarray]) -> None:
        """Add the blocks with the largest `scores` (grow_block_mask) until `density`. The new
        blocks start at zero, so the model computes exactly what it did before."""
        for k in self.params:
            mask = self.masks[k].numpy()
            self.masks[k] = torch.from_numpy(grow_block_mask(mask, scores[k], self.block, density))
        self.density = density
        self.apply()

    def state_dict(self) -> dict[str, Any]:
        return {"density": self.density, "masks": {k: m.bool() for k, m in self.masks.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.density = float(state["density"])
        self.masks = {k: m.float() for k, m in state["masks"].items()}


GROW_BATCHES = 8
"""Batches whose summed loss gradient scores the blocks --grow-density adds."""


def gradient_scores(
    model: WaveRNN, batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]], bf16: bool
) -> dict[str, np.ndarray]:
    """The loss gradient of every sparse matrix summed over `batches`, float32 like the matrix,
    pruned entries included (they are zero, not absent, so the gradient says how much the loss
    wants them)."""
    params = model.sparse_parameters()
    model.zero_grad(set_to_none=True)
    for batch in batches:
        batch_loss(model, batch, bf16).backward()
    scores = {k: p.grad.detach().float().numpy().copy() for k, p in params.items()}
    model.zero_grad(set_to_none=True)
    return scores


def finalize_sparsity(
    weights: dict[str, np.ndarray], config: VocoderConfig
) -> dict[str, np.ndarray]:
    """Prune the sparse matrices to exactly the target density (a no-op once training reached it)."""
    out = dict(weights)
    for name in SPARSE_WEIGHTS:
        mask = magnitude_block_mask(
            weights[name], (config.block_rows, config.block_cols), config.density
        )
        out[name] = (weights[name] * mask).astype(np.float32)
    return out


def block_density(w: np.ndarray, config: VocoderConfig) -> float:
    norms = block_norms(w, (config.block_rows, config.block_cols))
    return float(np.count_nonzero(norms) / norms.size)


# --- checkpoints -----------------------------------------------------------------------------------


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomic write: a crash mid-save never leaves a truncated checkpoint behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location="cpu", weights_only=False)


GRU_INPUT = "gru.weight_ih_l0"  # the parameter whose columns are the GRU's inputs


def model_from_checkpoint(state: dict[str, Any]) -> tuple[WaveRNN, VocoderConfig]:
    config = VocoderConfig.from_dict(state["config"])
    model = WaveRNN(config)
    # The input gain is part of what the stored GRU column means.
    model.sample_gain = float(state.get("sample_gain", SAMPLE_GAIN))
    params = {k: v.float() for k, v in state["model"].items()}
    params[GRU_INPUT] = widen_input_columns(params[GRU_INPUT], config.cond_size)
    model.load_state_dict(params)
    return model, config


def _widen_moments(opt: torch.optim.Optimizer, model: WaveRNN, config: VocoderConfig) -> None:
    """Adam moments of a checkpoint from before some step inputs existed: zero moments for the
    new columns, as for a fresh parameter (the other columns keep theirs)."""
    moments = opt.state.get(dict(model.named_parameters())[GRU_INPUT], {})
    for key in ("exp_avg", "exp_avg_sq"):
        if key in moments:
            moments[key] = widen_input_columns(moments[key], config.cond_size)


def export(state: dict[str, Any], out_dir: Path, temperature: float = 1.0) -> dict[str, np.ndarray]:
    """Checkpoint -> out_dir/{weights.npz, config.json}, exactly block-sparse at the target density.

    temperature < 1 sharpens the output distribution by scaling FC2 (weights and bias) by
    1 / temperature: logits / T is then baked into the weights, so the kernel's sampler is unchanged
    and the sparsity pattern is untouched. An undertrained model's wide tails let a single unlucky
    draw in silence start a loud excursion that the previous-sample input then sustains.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    model, config = model_from_checkpoint(state)
    weights = finalize_sparsity(to_reference_weights(model), config)
    if temperature != 1.0:
        inv = np.float32(1.0 / temperature)
        weights["fc2.weight"] = (weights["fc2.weight"] * inv).astype(np.float32)
        weights["fc2.bias"] = (weights["fc2.bias"] * inv).astype(np.float32)
        logger.info("baked sampling temperature %.3g into fc2", temperature)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / "weights.npz", **weights)
    config.save(out_dir / "config.json")
    for name in SPARSE_WEIGHTS:
        logger.info("exported %s: block density %.4f", name, block_density(weights[name], config))
    logger.info("exported step %s weights to %s", state.get("step"), out_dir)
    return weights


def save_small(state: dict[str, Any], path: Path) -> None:
    """A compact resumable checkpoint: fp16 weights + masks + counters (no optimizer moments)."""
    small = {
        "config": state["config"],
        "sample_gain": state.get("sample_gain", SAMPLE_GAIN),
        "model": {k: v.half() for k, v in state["model"].items()},
        "pruner": state["pruner"],
        "step": state["step"],
        "train_seconds": state["train_seconds"],
        "args": state.get("args", {}),
        "history": state.get("history", [])[-50:],
    }
    save_checkpoint(path, small)
    logger.info("saved compact checkpoint %s (%.1f MB)", path, path.stat().st_size / 1e6)


# --- training --------------------------------------------------------------------------------------

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def use_bf16(precision: str) -> bool:
    """bfloat16 autocast only where the CPU has bf16 arithmetic. Emulated it is far slower than
    float32 (AVX2-only Zen 3, same load: 143 vs 2,272 samples/s); natively it was 1.2-2x faster."""
    if precision != "auto":
        return precision == "bf16"
    from models.kernel.isa import (
        cpu_flags,  # /proc/cpuinfo, the same reading the kernel loader uses
    )

    return bool(cpu_flags() & NATIVE_BF16_FLAGS)


@dataclass
class TrainSettings:
    batch: int = 48
    crop_frames: int = 3
    lr: float = 1e-3
    final_lr: float = 5e-5
    warmup: int = 200
    prune_start: float = 0.15
    prune_end: float = 0.65
    bf16: bool = True
    grad_clip: float = 1.0


def _progress(
    step: int, train_seconds: float, steps: int | None, budget_seconds: float | None
) -> float:
    parts = [0.0]
    if steps:
        parts.append(step / steps)
    if budget_seconds:
        parts.append(train_seconds / budget_seconds)
    return min(1.0, max(parts))


def batch_loss(
    model: WaveRNN, batch: tuple[np.ndarray, np.ndarray, np.ndarray], bf16: bool
) -> torch.Tensor:
    """Mean cross-entropy of a sample_batch (mel, inputs, target) over its classes: the one loss
    that training, the held-out check and --grow-density's gradient all use."""
    mel, inputs, target = (torch.from_numpy(a) for a in batch)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(mel, inputs)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1))


@torch.no_grad()
def evaluate_loss(
    model: WaveRNN, batch: tuple[np.ndarray, np.ndarray, np.ndarray], bf16: bool
) -> float:
    return float(batch_loss(model, batch, bf16))


def train(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir) / args.name
    ckpt_path = run_dir / CHECKPOINT
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)

    state: dict[str, Any] | None = None
    if args.resume:
        src = Path(args.resume) if args.resume != "auto" else ckpt_path
        state = load_checkpoint(src)
        model, config = model_from_checkpoint(state)
        logger.info("resumed from %s at step %d", src, state["step"])
        for field in DOMAIN_FIELDS:
            # Fine-tuning into a new domain (pre-emphasis, the LPC excitation or its fit): the
            # network is kept, its inputs and targets change.
            value = getattr(args, field)
            if value is not None and value != getattr(config, field):
                logger.info("%s %s -> %s", field, getattr(config, field), value)
                config = dataclasses.replace(config, **{field: value})
        for name in CARRIED_SETTINGS:
            if getattr(args, name) is None:
                # A training setting, not part of the model: carried in the checkpoint's args so
                # a plain --resume goes on as the run it continues did.
                setattr(args, name, float(state.get("args", {}).get(name) or 0.0))
                if getattr(args, name):
                    logger.info("%s %s (from the checkpoint)", name, getattr(args, name))
    else:
        config = TINY if args.tiny else VocoderConfig()
        overrides = {k: getattr(args, k) for k in ("hidden_size", "fc_size") if getattr(args, k)}
        overrides |= {k: getattr(args, k) for k in DOMAIN_FIELDS if getattr(args, k) is not None}
        for name in CARRIED_SETTINGS:
            setattr(args, name, getattr(args, name) or 0.0)
        if overrides:
            config = VocoderConfig.from_dict({**config.to_dict(), **overrides})
        model = WaveRNN(config)
    s = TrainSettings(
        batch=args.batch,
        crop_frames=args.crop_frames,
        lr=args.lr,
        warmup=args.warmup,
        bf16=use_bf16(args.precision),
        prune_start=args.prune_start,
        prune_end=args.prune_end,
    )
    opt = torch.optim.Adam(model.parameters(), lr=s.lr, betas=(0.9, 0.999))
    pruner = Pruner(model, config)
    step, prior_seconds, history = 0, 0.0, []
    warm_from = 0  # fresh Adam moments (new run, or a compact checkpoint) get a fresh warm-up
    if state is not None:
        step, prior_seconds = int(state["step"]), float(state["train_seconds"])
        history = list(state.get("history", []))
        pruner.load_state_dict(state["pruner"])
        if "optimizer" in state:
            opt.load_state_dict(state["optimizer"])
            _widen_moments(opt, model, config)
        else:
            warm_from = step
    budget = prior_seconds + args.max_minutes * 60 if args.max_minutes else None
    # --lr-cycle: the learning rate's own schedule over this run alone; pruning keeps the whole run's.
    start_step = step
    cycle_steps = args.steps - start_step if args.steps else None
    cycle_budget = args.max_minutes * 60 if args.max_minutes else None
    if args.lr_cycle:
        warm_from = step
    if args.grow_density is not None:  # checked before the corpus is read, which takes minutes
        if state is None:
            raise GrowthError("--grow-density grows the masks of a run it resumes: add --resume")
        if pruner.density != config.density:
            raise GrowthError(
                f"the resumed run is still pruning ({pruner.density:.3f} of its blocks kept, "
                f"target {config.density:.3f}): grow it once it has reached its density"
            )
        if args.grow_density <= pruner.density:
            raise GrowthError(
                f"--grow-density {args.grow_density} must be above the resumed run's density "
                f"{pruner.density:.3f}"
            )

    if args.synthetic:
        args.corpus = str(write_synthetic_corpus(run_dir / "synthetic-corpus", seed=args.seed))
    if args.input_ring and not args.input_noise:
        logger.warning("--input-ring %.2f has no slips to ring without --input-noise", args.input_ring)
    if args.input_ring:
        logger.info("slips ring through the LPC filter with gamma up to %.2f", args.input_ring)
    corpus = Corpus(Path(args.corpus), "train", config, input_noise=args.input_noise, input_ring=args.input_ring)
    corpus.refresh()
    held_out = Corpus(Path(args.corpus), "test", config)
    held_out.refresh()
    if not corpus.utterances:
        raise CorpusError(f"no usable training utterances in {args.corpus}")
    val_rng = np.random.default_rng(1234)
    val_batch = (
        sample_batch(held_out.utterances, config, 32, s.crop_frames, val_rng)
        if held_out.utterances
        else None
    )
    if args.grow_density is not None:
        grow_rng = np.random.default_rng(args.seed + 1)
        batches = [
            sample_batch(corpus.utterances, config, s.batch, s.crop_frames, grow_rng)
            for _ in range(GROW_BATCHES)
        ]
        before = pruner.density
        pruner.grow(args.grow_density, gradient_scores(model, batches, s.bf16))
        config = dataclasses.replace(config, density=args.grow_density)
        logger.info(
            "grew the sparse matrices from %.3f to %.3f of their blocks, by the loss gradient over %d batches",
            before,
            pruner.density,
            GROW_BATCHES,
        )
    logger.info(
        "training H=%d F=%d block %dx%d density %.2f | %d utterances (%d frames) | batch %d x %d samples, "
        "%d threads, bf16=%s",
        config.hidden_size,
        config.fc_size,
        config.block_rows,
        config.block_cols,
        config.density,
        len(corpus.utterances),
        corpus.frames,
        s.batch,
        s.crop_frames * config.hop_length,
        args.threads,
        s.bf16,
    )

    def snapshot(seconds: float) -> dict[str, Any]:
        return {
            "config": config.to_dict(),
            "sample_gain": model.sample_gain,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "pruner": pruner.state_dict(),
            "step": step,
            "train_seconds": seconds,
            "args": {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "func"},
            "history": history,
        }

    t_start = time.monotonic()
    last_ckpt = last_refresh = last_log = t_start
    window_steps, window_loss, window_t = 0, 0.0, t_start
    samples_per_step = s.batch * s.crop_frames * config.hop_length
    model.train()
    while True:
        now = time.monotonic()
        seconds = prior_seconds + (now - t_start)
        if args.steps and step >= args.steps:
            break
        if args.max_minutes and now - t_start >= args.max_minutes * 60:
            break
        progress = _progress(step, seconds, args.steps, budget)
        density = cubic_density(progress, config.density, s.prune_start, s.prune_end)
        # Masks follow the schedule every `prune_every` steps (and once more exactly at the target).
        # Once at the target the masks are frozen, so the kept blocks can settle.
        at_target = density == config.density
        if (
            density < 1.0
            and pruner.density != config.density
            and (step % args.prune_every == 0 or at_target)
        ):
            pruner.update(density)
        lr_progress = (
            _progress(step - start_step, seconds - prior_seconds, cycle_steps, cycle_budget)
            if args.lr_cycle
            else progress
        )
        lr = learning_rate(lr_progress, step - warm_from, s.lr, s.warmup, s.final_lr)
        for g in opt.param_groups:
            g["lr"] = lr

        batch = sample_batch(corpus.utterances, config, s.batch, s.crop_frames, rng)
        loss = batch_loss(model, batch, s.bf16)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        opt.step()
        pruner.apply()
        step += 1
        window_steps += 1
        window_loss += float(loss.detach())

        now = time.monotonic()
        if now - last_log >= args.log_seconds or (args.steps and step == args.steps):
            rate = window_steps / max(now - window_t, 1e-9)
            entry = {
                "step": step,
                "loss": window_loss / window_steps,
                "lr": lr,
                "density": pruner.density,
                "steps_per_s": rate,
                "samples_per_s": rate * samples_per_step,
                "progress": progress,
                "minutes": (prior_seconds + now - t_start) / 60,
            }
            if val_batch is not None and step % max(1, args.val_every) < window_steps:
                model.eval()
                entry["val_loss"] = evaluate_loss(model, val_batch, s.bf16)
                model.train()
            history.append(entry)
            logger.info(
                "step %d | loss %.4f%s | lr %.2e | density %.3f | %.2f steps/s %.0f samples/s | %.1f%% | %.1f min",
                step,
                entry["loss"],
                f" val {entry['val_loss']:.4f}" if "val_loss" in entry else "",
                lr,
                pruner.density,
                rate,
                entry["samples_per_s"],
                100 * progress,
                entry["minutes"],
            )
            window_steps, window_loss, window_t, last_log = 0, 0.0, now, now
        if now - last_refresh >= args.refresh_minutes * 60:
            added = corpus.refresh()
            if added:
                logger.info("corpus grew by %d utterances to %d", added, len(corpus.utterances))
            last_refresh = now
        if now - last_ckpt >= args.checkpoint_minutes * 60:
            save_checkpoint(ckpt_path, snapshot(prior_seconds + now - t_start))
            logger.info("checkpoint %s at step %d", ckpt_path, step)
            last_ckpt = now

    final = snapshot(prior_seconds + time.monotonic() - t_start)
    save_checkpoint(ckpt_path, final)
    logger.info("finished at step %d; checkpoint %s", step, ckpt_path)
    if args.export:
        export(final, Path(args.export), args.temperature)
    if args.save_small:
        save_small(final, Path(args.save_small))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--corpus", default="data/corpus", help="directory written by `sparrow data`"
    )
    parser.add_argument(
        "--name", default="wavernn-slt", help="run name: checkpoints go to RUN_DIR/NAME/"
    )
    parser.add_argument("--run-dir", default="runs")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        help="continue from RUN_DIR/NAME/checkpoint.pt, or from the given checkpoint file",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="stop after this many steps (in total)"
    )
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="stop after this many minutes of this run"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="models.vocoder.config.TINY-sized model (smoke tests)"
    )
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="train on a tiny generated tone corpus (written to RUN_DIR/NAME/) instead of --corpus",
    )
    parser.add_argument("--hidden-size", type=int, default=None)
    parser.add_argument("--fc-size", type=int, default=None)
    parser.add_argument(
        "--preemphasis",
        type=float,
        default=None,
        help="pre-emphasis of the target (default: the model config's; on --resume, switches domain)",
    )
    parser.add_argument(
        "--lpc-order",
        type=int,
        default=None,
        help="predict the excitation of this many LPC poles fitted to each frame's mel, LPCNet-style "
        "(default: the model config's, 0 = off; on --resume, switches domain)",
    )
    parser.add_argument(
        "--lpc-noise-floor",
        type=float,
        default=None,
        help="white-noise correction of the LPC fit, which tempers its sharpest resonances (default: the "
        "model config's; on --resume, switches domain)",
    )
    parser.add_argument(
        "--input-noise",
        type=float,
        default=None,
        help="LPC models: inject mu-law slips into the past the net sees, Laplace-distributed with "
        "a per-utterance scale up to this many steps, so sampling does not run away (LPCNet; "
        "default: the resumed run's, else 0 = off)",
    )
    parser.add_argument(
        "--input-ring",
        type=bounded(float, 0.0, 1.0, high_open=True),  # gamma 1: the fit's full resonances, up to ~50 dB sharp
        default=None,
        help="with --input-noise: pass the slips through each frame's LPC filter 1/A(z/gamma), gamma "
        "uniform per utterance up to this (< 1), so the past is bent as an uncorrected run rings it, "
        "not white (default: the resumed run's, else 0 = white slips)",
    )
    parser.add_argument("--batch", type=int, default=48)
    parser.add_argument(
        "--crop-frames", type=int, default=3, help="mel frames (x hop samples) per crop"
    )
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument(
        "--lr-cycle",
        action="store_true",
        help="with --resume: a new learning-rate cycle over this run alone (warm-up, then cosine "
        "from --lr to the final rate over its --max-minutes / --steps), instead of going on with "
        "the whole run's schedule where it stopped (near its final rate late in a long run)",
    )
    parser.add_argument(
        "--prune-start", type=float, default=0.15, help="progress at which pruning starts"
    )
    parser.add_argument(
        "--prune-end", type=float, default=0.65, help="progress at which density hits target"
    )
    parser.add_argument("--prune-every", type=int, default=25, help="steps between mask updates")
    parser.add_argument(
        "--grow-density",
        type=bounded(float, 0.0, 1.0),
        default=None,
        metavar="D",
        help="with --resume: add the blocks the loss gradient wants most to W_hh, FC1 and FC2 until "
        "this share of blocks is kept, starting at zero (the net computes what it did), and train "
        "at that density from then on",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp32"),
        default="auto",
        help="autocast dtype; auto = bf16 where the CPU multiplies bf16 natively (avx512_bf16/AMX), "
        "else fp32",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-seconds", type=float, default=30.0)
    parser.add_argument(
        "--val-every", type=int, default=100, help="steps between held-out loss checks"
    )
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0)
    parser.add_argument(
        "--refresh-minutes", type=float, default=5.0, help="re-read metadata.csv this often"
    )
    parser.add_argument(
        "--export",
        default=None,
        metavar="DIR",
        help="write DIR/weights.npz + config.json (after training, or from --resume with --steps 0)",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="sampling temperature baked into the exported FC2 (< 1 sharpens; see docs/training.md)",
    )
    parser.add_argument(
        "--save-small", default=None, metavar="PATH", help="also write a compact fp16 checkpoint"
    )


def run(args: argparse.Namespace) -> int:
    # Export-only: `sparrow train --resume [CKPT] --export DIR --steps 0` skips the corpus entirely.
    if args.resume and args.steps == 0:
        state = load_checkpoint(
            Path(args.resume)
            if args.resume != "auto"
            else Path(args.run_dir) / args.name / CHECKPOINT
        )
        if args.export:
            export(state, Path(args.export), args.temperature)
        if args.save_small:
            save_small(state, Path(args.save_small))
        return 0
    try:
        return train(args)
    except (CorpusError, GrowthError, FileNotFoundError) as exc:
        print(f"sparrow train: {exc}", file=sys.stderr)
        return 1
