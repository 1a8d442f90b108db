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
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.train.checkpoint import (
    CHECKPOINT,
    export,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    save_small,
    widen_moments,
)
from models.train.corpus import Corpus, CorpusError, sample_batch, write_synthetic_corpus
from models.train.pruning import GrowthError, Pruner, cubic_density, learning_rate
from models.train.wavernn import WaveRNN
from models.vocoder.config import TINY, VocoderConfig

logger = logging.getLogger(__name__)

DOMAIN_FIELDS = ("preemphasis", "lpc_order", "lpc_noise_floor")
"""VocoderConfig fields a run may change on --resume: they change the targets, not the net's
shape."""
CARRIED_SETTINGS = ("input_noise", "input_ring")
"""Training settings (not model fields) a plain --resume takes from the checkpoint's args; 0 =
off."""


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


def check_density_change(
    args: argparse.Namespace, state: dict[str, Any] | None, pruner: Pruner, config: VocoderConfig
) -> None:
    """Refuse a --grow-density or --prune-density the resumed run cannot take: there must be a
    run, at its target density (not still pruning), and the new density on the right side."""
    if args.grow_density is not None and args.prune_density is not None:
        raise GrowthError("--grow-density and --prune-density: give one")
    for flag, value, above in (
        ("--grow-density", args.grow_density, True),
        ("--prune-density", args.prune_density, False),
    ):
        if value is None:
            continue
        if state is None:
            raise GrowthError(f"{flag} changes the masks of a run it resumes: add --resume")
        if pruner.density != config.density:
            raise GrowthError(
                f"the resumed run is still pruning ({pruner.density:.3f} of its blocks kept, "
                f"target {config.density:.3f}): change it once it has reached its density"
            )
        if (value <= pruner.density) if above else (value >= pruner.density):
            side = "above" if above else "below"
            raise GrowthError(
                f"{flag} {value} must be {side} the resumed run's density {pruner.density:.3f}"
            )


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


def _resume_or_start(
    args: argparse.Namespace, ckpt_path: Path
) -> tuple[dict[str, Any] | None, WaveRNN, VocoderConfig]:
    """(checkpoint state or None, model, config): the run --resume names, with the domain fields
    and carried settings it may change, or a new model from the options."""
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
    return state, model, config


def train(args: argparse.Namespace) -> int:
    """Run (or resume) training until --steps or --max-minutes; checkpoint, export.

    Long on purpose: the loop's running state (step, the log window, the timers, the optimiser
    and pruner) lives in its locals, and each stage of a step reads several of them; split into
    functions it would pass a dozen values back and forth. The set-up is in helpers above."""
    torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir) / args.name
    ckpt_path = run_dir / CHECKPOINT
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)

    state, model, config = _resume_or_start(args, ckpt_path)
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
            widen_moments(opt, model, config)
        else:
            warm_from = step
    budget = prior_seconds + args.max_minutes * 60 if args.max_minutes else None
    # --lr-cycle: the learning rate's own schedule over this run alone; pruning keeps the whole
    # run's.
    start_step = step
    cycle_steps = args.steps - start_step if args.steps else None
    cycle_budget = args.max_minutes * 60 if args.max_minutes else None
    if args.lr_cycle:
        warm_from = step
    check_density_change(args, state, pruner, config)  # before the corpus, which takes minutes
    # --prune-density: this run's pruning goes from the resumed density down to the new one
    # along its own progress (--prune-start/--prune-end of this run), like --lr-cycle's schedule
    prune_from = pruner.density if args.prune_density is not None else None
    if args.prune_density is not None:
        config = dataclasses.replace(config, density=args.prune_density)

    if args.synthetic:
        args.corpus = str(write_synthetic_corpus(run_dir / "synthetic-corpus", seed=args.seed))
    if args.input_ring and not args.input_noise:
        logger.warning(
            "--input-ring %.2f has no slips to ring without --input-noise", args.input_ring
        )
    if args.input_ring:
        logger.info("slips ring through the LPC filter with gamma up to %.2f", args.input_ring)
    corpus = Corpus(
        Path(args.corpus), "train", config, input_noise=args.input_noise, input_ring=args.input_ring
    )
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
            "grew the sparse matrices from %.3f to %.3f of their blocks, by the loss gradient over "
            "%d batches",
            before,
            pruner.density,
            GROW_BATCHES,
        )
    logger.info(
        "training H=%d F=%d block %dx%d density %.2f | %d utterances (%d frames) | batch %d x %d "
        "samples, "
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
        run_progress = _progress(
            step - start_step, seconds - prior_seconds, cycle_steps, cycle_budget
        )
        if prune_from is None:
            density = cubic_density(progress, config.density, s.prune_start, s.prune_end)
        else:
            density = cubic_density(
                run_progress, config.density, s.prune_start, s.prune_end, prune_from
            )
        # Masks follow the schedule every `prune_every` steps (and once more exactly at the target).
        # Once at the target the masks are frozen, so the kept blocks can settle.
        at_target = density == config.density
        if density < pruner.density and (step % args.prune_every == 0 or at_target):
            pruner.update(density)
        lr_progress = run_progress if args.lr_cycle else progress
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
                "step %d | loss %.4f%s | lr %.2e | density %.3f | %.2f steps/s %.0f samples/s | "
                "%.1f%% | %.1f min",
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
