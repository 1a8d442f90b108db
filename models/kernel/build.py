"""Compile one module: the frame kernel ("main"), its batched variants ("frame_b2", ...: several
streams a frame each per call) and the conditioning network ("condition")."""

from __future__ import annotations

from collections.abc import Sequence

import tvm

from models.kernel.batch import BATCH_SIZES, batch_function_name, make_batch_kernel
from models.kernel.condition import make_condition_kernel
from models.kernel.frame import make_frame_kernel
from models.kernel.isa import INT8_VARIANT, ISA_TARGETS
from models.kernel.packing import KernelShape

# conditioning rows computed side by side per ISA variant (make_condition_kernel's `rows`): as
# many as the vector registers hold
CONDITION_ROWS = {"vnni": 4, "avx512bw": 4, "avx2": 2}


def build(
    shape: KernelShape,
    isa: str | None,
    target: dict[str, object] | None = None,
    batches: Sequence[int] = BATCH_SIZES,
) -> tvm.runtime.Module:
    """Compile the frame kernel ("main"), one batched kernel per B in `batches` and the
    conditioning network ("condition") for one ISA level (or an explicit target dict)."""
    if target is None:
        if isa not in ISA_TARGETS:
            raise ValueError(f"unknown ISA {isa!r}; known: {sorted(ISA_TARGETS)}")
        target = ISA_TARGETS[isa]
    variant = INT8_VARIANT.get(isa or "", "generic")
    funcs = {
        "main": make_frame_kernel(shape, variant),
        "condition": make_condition_kernel(
            shape.config, fused=variant != "generic", rows=CONDITION_ROWS.get(variant, 2)
        ),
    }
    for b in batches:
        funcs[batch_function_name(b)] = make_batch_kernel(shape, variant, b).with_attr(
            "global_symbol", batch_function_name(b)
        )
    return tvm.compile(tvm.IRModule(funcs), target=tvm.target.Target(target))
