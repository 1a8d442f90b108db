"""The load test's report: progress on stderr, percentiles, the summary and its table."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from models.dsp.features import SPEC

if TYPE_CHECKING:
    from server.loadtest.client import Plan, StreamResult


class Progress:
    """A one-line progress bar on stderr (redrawn in place; silent when disabled)."""

    def __init__(self, enabled: bool, total: int | None, duration: float | None) -> None:
        self.enabled = enabled
        self.total = total
        self.duration = duration
        self.t0 = time.perf_counter()
        self.done = self.ok = self.refused = self.errors = 0

    def add(self, res: StreamResult) -> None:
        self.done += 1
        self.ok += res.ok
        self.refused += res.refused
        self.errors += res.error is not None

    def draw(self, final: bool = False) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.t0
        fractions = []
        if self.total:
            fractions.append(self.done / self.total)
        if self.duration:
            fractions.append(min(1.0, elapsed / self.duration))
        frac = 1.0 if final else max(fractions, default=0.0)
        width = 30
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        sys.stderr.write(
            f"\r[{bar}] {self.done} done: {self.ok} ok {self.refused} refused "
            f"{self.errors} errors  {elapsed:5.1f} s"
        )
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _pct(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    arr = np.asarray(values, dtype=np.float64)
    return {
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "p99": float(np.percentile(arr, 99)),
        "max": float(arr.max()),
    }


def summarize(results: Sequence[StreamResult], plan: Plan, wall_s: float) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    errors: dict[str, int] = {}
    for r in results:
        if r.error is not None:
            errors[r.error] = errors.get(r.error, 0) + 1
    late_total = sum(r.late_frames for r in ok)
    frames_total = sum(r.frames for r in ok)
    audio_s = sum(r.samples for r in ok) / SPEC.sample_rate
    return {
        "url": plan.url,
        "mode": (
            f"openai {plan.openai_format}"
            if plan.openai_format
            else ("http" if plan.http else "websocket")
        ),
        "concurrency": plan.streams,
        "buffer_ms": plan.buffer_s * 1000.0,
        "streams": len(results),
        "ok": len(ok),
        "refused": sum(r.refused for r in results),
        "errors": sum(r.error is not None for r in results),
        "error_kinds": errors,
        "wall_s": wall_s,
        "audio_s": audio_s,
        "ttfa_ms": _pct([r.ttfa_s * 1000.0 for r in ok if r.ttfa_s is not None]),
        "server_rtf": _pct([r.server_rtf for r in ok if r.server_rtf is not None]),
        "client_rtf": _pct([r.client_rtf for r in ok if r.client_rtf is not None]),
        "late_frames_per_stream": _pct([float(r.late_frames) for r in ok]),
        "late_frames": late_total,
        "frames": frames_total,
        "streams_with_late_frames": sum(r.late_frames > 0 for r in ok),
        # Real time = every stream admitted, served and played without a gap.
        "real_time": bool(ok) and late_total == 0 and not errors and len(ok) == len(results),
    }


def format_table(s: dict[str, Any]) -> str:
    def row(name: str, d: dict[str, float | None], fmt: str) -> str:
        cells = [("-" if d[k] is None else format(d[k], fmt)) for k in ("p50", "p95", "p99", "max")]
        return f"{name:<24}" + "".join(f"{c:>10}" for c in cells)

    frac = s["late_frames"] / s["frames"] if s["frames"] else 0.0
    lines = [
        (
            f"sparrow loadtest  {s['url']}  {s['mode']}, {s['concurrency']} concurrent, "
            f"jitter buffer {s['buffer_ms']:g} ms"
        ),
        f"streams: {s['streams']}  ok: {s['ok']}  refused: {s['refused']}  errors: {s['errors']}",
        f"audio: {s['audio_s']:.1f} s in {s['wall_s']:.1f} s wall",
        "",
        f"{'':<24}" + "".join(f"{k:>10}" for k in ("p50", "p95", "p99", "max")),
        row("time to first audio ms", s["ttfa_ms"], ".1f"),
        row("real-time factor server", s["server_rtf"], ".3f"),
        row("real-time factor wall", s["client_rtf"], ".3f"),
        row("late frames / stream", s["late_frames_per_stream"], ".0f"),
        "",
        (
            f"late frames: {s['late_frames']} of {s['frames']} ({100.0 * frac:.2f}%), "
            f"{s['streams_with_late_frames']} streams affected"
        ),
    ]
    for kind, n in sorted(s["error_kinds"].items(), key=lambda kv: -kv[1])[:5]:
        lines.append(f"error x{n}: {kind}")
    if s["real_time"]:
        verdict = "REAL-TIME: every stream served with no late frame"
    else:
        reasons = [
            f"{n} {what}"
            for n, what in (
                (s["late_frames"], "late frames"),
                (s["refused"], "streams refused (over capacity)"),
                (s["errors"], "errors"),
            )
            if n
        ]
        verdict = "NOT real-time: " + (", ".join(reasons) or "no stream completed")
    lines.append("verdict: " + verdict)
    return "\n".join(lines)
