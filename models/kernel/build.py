"""Compile one module: the frame kernel ("main") and the conditioning network ("condition")."""

from __future__ import annotations

import tvm

from models.kernel.condition import make_condition_kernel
from models.kernel.frame import make_frame_kernel
from models.kernel.isa import INT8_VARIANT, ISA_TARGETS
from models.kernel.packing import KernelShape


def build(
    shape: KernelShape, isa: str | None, target: dict[str, object] | None = None
) -> tvm.runtime.Module:
    """Compile the frame kernel ("main") and the conditioning network ("condition") for one ISA
    level (or an explicit target dict)."""
    if target is None:
        if isa not in ISA_TARGETS:
            raise ValueError(f"unknown ISA {isa!r}; known: {sorted(ISA_TARGETS)}")
        target = ISA_TARGETS[isa]
    variant = INT8_VARIANT.get(isa or "", "generic")
    func = make_frame_kernel(shape, variant)
    cond = make_condition_kernel(shape.config, fused=variant != "generic")
    return tvm.compile(
        tvm.IRModule({"main": func, "condition": cond}), target=tvm.target.Target(target)
    )
