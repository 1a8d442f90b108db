#!/usr/bin/env python3
"""Write random-valued weight tables for LPCNet's C inference (xiph/LPCNet, blob-era `src/`).

LPCNet's trained weights (`nnet_data.c`) are downloaded by its `autogen.sh`; nothing downloads
here, so this writes tables with the SHAPES and SPARSITY of its reference model instead
(`training_tf2/lpcnet.py` defaults, as `training_tf2/dump_lpcnet.py` lays them out): frame-rate
network (two 3-tap conv1d of 128, two dense 128, a 64-dim pitch embedding), GRU A of 384 units
whose recurrent matrix is block-sparse in 4x8 int8 blocks at densities 5% / 5% / 20% (update /
reset / state, 10% overall) plus a float diagonal, GRU B of 16 units with a dense int8 input
matrix in the same block format, and the dual FC feeding the 8-step hierarchical 256-way sampler.

Values are random. The speed of LPCNet's synthesis does not depend on them: every matrix-vector
product is dense or runs over a fixed list of blocks, activations are branch-free approximations,
and the sampler always takes 8 binary decisions per sample. The audio it makes is noise.

Also writes `plc_data.h` and `dred_rdovae_constants.h`, which `nnet.c` and `lpcnet_private.h`
include for buffer sizes only; the PLC and DRED models are not built.

Usage: lpcnet_weights.py OUT_DIR [--seed N]   (prints the net's sizes as JSON)
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np

GRU_A = 384  # rnn_units1
GRU_B = 16  # rnn_units2
COND = 128  # cond_size
EMBED = 128  # embed_size: the mu-law embeddings folded into GRU A's input matrix
NB_FEATURES = 20  # nb_used_features
PITCH_EMBED = 64
LEVELS = 256  # pcm_levels
GRU_A_DENSITY = (0.05, 0.05, 0.2)  # train_lpcnet.py: update, reset, state
FEATURES_DELAY = 2  # lookahead


class Tables:
    """Accumulates the C arrays, the model struct and the init calls, as dump_lpcnet.py does."""

    def __init__(self) -> None:
        self.src = io.StringIO()
        self.defines: list[str] = []
        self.struct: list[str] = []
        self.init: list[str] = []
        self.names: list[str] = []
        self.stored = 0  # values in the tables: weights (kept blocks only), biases, embeddings
        self.per_sample = 0  # weights the sample-rate network reads per output sample

    def array(self, name: str, values: np.ndarray, ctype: str = "float") -> None:
        v = values.reshape(-1)
        if ctype == "float":
            body = ",".join(f"{x:.6g}f" for x in v.astype(np.float32))
        else:
            body = ",".join(str(int(x)) for x in v)
        self.src.write(f"static const {ctype} {name}[{v.size}] = {{{body}}};\n")
        self.names.append(name)

    def define(self, name: str, value: object) -> None:
        self.defines.append(f"#define {name} {value}")


def block_sparse(rng: np.random.Generator, n_in: int, n_out: int, density: float) -> np.ndarray:
    """0/1 mask over (n_in/4, n_out/8) blocks with round(blocks * density) ones, as Sparsify keeps
    the top blocks of each gate by energy."""
    blocks = (n_in // 4) * (n_out // 8)
    mask = np.zeros(blocks, bool)
    mask[rng.choice(blocks, round(blocks * density), replace=False)] = True
    return mask.reshape(n_in // 4, n_out // 8)


def sparse_int8(t: Tables, name: str, q: np.ndarray, mask: np.ndarray) -> None:
    """printSparseVector's DOT_PROD layout: per group of 8 outputs, the block count, then each
    kept block's first input row; the weights of a block input-major within the block."""
    idx: list[int] = []
    w: list[np.ndarray] = []
    for i in range(q.shape[1] // 8):
        rows = np.flatnonzero(mask[:, i])
        idx.append(len(rows))
        for j in rows:
            idx.append(4 * j)
            w.append(q[4 * j : 4 * j + 4, 8 * i : 8 * i + 8].T.reshape(-1))
    t.array(name, np.concatenate(w), "qweight")
    t.array(name + "_idx", np.array(idx), "int")
    t.per_sample += 32 * int(mask.sum())
    t.stored += 32 * int(mask.sum())


def dense(t: Tables, name: str, rng: np.random.Generator, n_in: int, n_out: int, act: str) -> None:
    t.array(name + "_weights", rng.uniform(-0.1, 0.1, (n_in, n_out)))
    t.array(name + "_bias", rng.uniform(-0.1, 0.1, n_out))
    t.define(name.upper() + "_OUT_SIZE", n_out)
    t.struct.append(f"  DenseLayer {name};")
    t.init.append(
        f'  if (dense_init(&model->{name}, arrays, "{name}_bias", "{name}_weights", '
        f"{n_in}, {n_out}, ACTIVATION_{act})) return 1;"
    )
    t.stored += (n_in + 1) * n_out


def embedding(t: Tables, name: str, rng: np.random.Generator, n: int, dim: int) -> None:
    t.array(name + "_weights", rng.uniform(-0.1, 0.1, (n, dim)))
    t.define(name.upper() + "_OUT_SIZE", dim)
    t.struct.append(f"  EmbeddingLayer {name};")
    t.init.append(
        f'  if (embedding_init(&model->{name}, arrays, "{name}_weights", {n}, {dim})) return 1;'
    )
    t.stored += n * dim


def conv1d(t: Tables, name: str, rng: np.random.Generator, n_in: int, n_out: int) -> None:
    t.array(name + "_weights", rng.uniform(-0.1, 0.1, (3, n_in, n_out)))
    t.array(name + "_bias", rng.uniform(-0.1, 0.1, n_out))
    t.define(name.upper() + "_OUT_SIZE", n_out)
    t.define(name.upper() + "_STATE_SIZE", f"({n_in}*2)")
    t.define(name.upper() + "_DELAY", 1)
    t.struct.append(f"  Conv1DLayer {name};")
    t.init.append(
        f'  if (conv1d_init(&model->{name}, arrays, "{name}_bias", "{name}_weights", '
        f"{n_in}, 3, {n_out}, ACTIVATION_TANH)) return 1;"
    )
    t.stored += (3 * n_in + 1) * n_out


def gru_a(t: Tables, rng: np.random.Generator) -> None:
    name, n = "sparse_gru_a", GRU_A
    q = rng.integers(-63, 64, (n, 3 * n))  # |w| < 64: adjacent pairs never saturate maddubs
    mask = np.concatenate(
        [block_sparse(rng, n, n, d) for d in GRU_A_DENSITY], axis=1
    )  # (n/4, 3n/8)
    t.array(name + "_recurrent_weights_diag", rng.uniform(-0.5, 0.5, 3 * n))
    sparse_int8(t, name + "_recurrent_weights", q, mask)
    bias = rng.uniform(-0.1, 0.1, (2, 3 * n))
    t.array(name + "_bias", bias)
    subias = bias.copy()
    subias[1] -= (q * np.repeat(np.repeat(mask, 4, 0), 8, 1)).sum(0) / 128.0
    t.array(name + "_subias", subias)
    for k in ("OUT", "STATE"):
        t.define(f"{name.upper()}_{k}_SIZE", n)
    t.struct.append(f"  SparseGRULayer {name};")
    t.init.append(
        f'  if (sparse_gru_init(&model->{name}, arrays, "{name}_bias", "{name}_subias", '
        f'"{name}_recurrent_weights_diag", "{name}_recurrent_weights", '
        f'"{name}_recurrent_weights_idx", {n}, ACTIVATION_TANH, 1)) return 1;'
    )
    t.stored += 3 * n + 12 * n
    t.per_sample += 3 * n


def gru_b(t: Tables, rng: np.random.Generator) -> None:
    name, n, m = "gru_b", GRU_B, GRU_A
    q_in = rng.integers(-63, 64, (m, 3 * n))
    sparse_int8(t, name + "_weights", q_in, np.ones((m // 4, 3 * n // 8), bool))
    q_rec = rng.integers(-63, 64, (n, 3 * n))
    # printVector(dotp=True): (in/4, 4, out/8, 8) -> (out/8, in/4, 8, 4)
    t.array(
        name + "_recurrent_weights",
        q_rec.reshape(n // 4, 4, 3 * n // 8, 8).transpose(2, 0, 3, 1),
        "qweight",
    )
    bias = rng.uniform(-0.1, 0.1, (2, 3 * n))
    t.array(name + "_bias", bias)
    subias = bias.copy()
    subias[0] -= q_in.sum(0) / 128.0
    subias[1] -= q_rec.sum(0) / 128.0
    t.array(name + "_subias", subias)
    t.struct.append(f"  GRULayer {name};")
    t.init.append(
        f'  if (gru_init(&model->{name}, arrays, "{name}_bias", "{name}_subias", '
        f'"{name}_weights", "{name}_weights_idx", "{name}_recurrent_weights", {m}, {n}, '
        f"ACTIVATION_TANH, 1)) return 1;"
    )
    t.stored += 3 * n * n + 12 * n
    t.per_sample += 3 * n * n


def dual_fc(t: Tables, rng: np.random.Generator) -> None:
    name = "dual_fc"
    t.array(name + "_weights", rng.uniform(-0.5, 0.5, (LEVELS, 2, GRU_B)))
    t.array(name + "_bias", rng.uniform(-0.1, 0.1, (2, LEVELS)))
    t.array(name + "_factor", rng.uniform(0.5, 1.5, (2, LEVELS)))
    t.define("DUAL_FC_OUT_SIZE", LEVELS)
    t.struct.append(f"  MDenseLayer {name};")
    t.init.append(
        f'  if (mdense_init(&model->{name}, arrays, "{name}_bias", "{name}_weights", '
        f'"{name}_factor", {GRU_B}, {LEVELS}, 2, ACTIVATION_SIGMOID)) return 1;'
    )
    t.stored += LEVELS * 2 * (GRU_B + 2)
    # the sampler evaluates 8 of the 255 tree nodes per sample, 2 channels each
    t.per_sample += 8 * 2 * GRU_B


def build(seed: int) -> Tables:
    rng = np.random.default_rng(seed)
    t = Tables()
    for part in ("sig", "pred", "exc"):  # mu-law embeddings times GRU A's input matrix
        embedding(t, f"gru_a_embed_{part}", rng, LEVELS, 3 * GRU_A)
        t.per_sample += 3 * GRU_A  # one row read per sample
    dense(t, "gru_a_dense_feature", rng, COND, 3 * GRU_A, "LINEAR")
    dense(t, "gru_b_dense_feature", rng, COND, 3 * GRU_B, "LINEAR")
    gru_b(t, rng)
    conv1d(t, "feature_conv1", rng, NB_FEATURES + PITCH_EMBED, COND)
    conv1d(t, "feature_conv2", rng, COND, COND)
    embedding(t, "embed_pitch", rng, 256, PITCH_EMBED)
    dense(t, "feature_dense1", rng, COND, COND, "TANH")
    dense(t, "feature_dense2", rng, COND, COND, "TANH")
    for name, n in (("GRU_A", GRU_A), ("GRU_B", GRU_B)):
        t.define(f"{name}_OUT_SIZE", n)
        t.define(f"{name}_STATE_SIZE", n)
    dual_fc(t, rng)
    gru_a(t, rng)
    return t


def write(t: Tables, out: Path, seed: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    note = f"/* Random-valued LPCNet tables (shapes of the reference model), seed {seed}. */\n"
    arrays = "".join(f'  {{"{n}", 0, sizeof({n}), {n}}},\n' for n in t.names)
    (out / "nnet_data.c").write_text(
        note + '#include "nnet.h"\n#include "nnet_data.h"\n\n'
        "#ifndef DOT_PROD\n#error these tables hold the int8 (DOT_PROD) layout\n#endif\n"
        + t.src.getvalue()
        + "\nconst WeightArray lpcnet_arrays[] = {\n"
        + arrays
        + "  {NULL, 0, 0, NULL}\n};\n\n"
        + "int init_lpcnet_model(LPCNetModel *model, const WeightArray *arrays) {\n"
        + "\n".join(t.init)
        + "\n  return 0;\n}\n"
    )
    (out / "nnet_data.h").write_text(
        note + '#ifndef RNN_DATA_H\n#define RNN_DATA_H\n\n#include "nnet.h"\n\n'
        "#define LPC_GAMMA 1.f\n"
        f"#define FEATURES_DELAY {FEATURES_DELAY}\n"
        + "\n".join(t.defines)
        + f"\n#define MAX_RNN_NEURONS {GRU_A}\n"
        f"#define MAX_CONV_INPUTS {3 * COND}\n"
        f"#define MAX_MDENSE_TMP {2 * LEVELS}\n\n"
        "typedef struct {\n"
        "  float feature_conv1_state[FEATURE_CONV1_STATE_SIZE];\n"
        "  float feature_conv2_state[FEATURE_CONV2_STATE_SIZE];\n"
        "  float gru_a_state[GRU_A_STATE_SIZE];\n"
        "  float gru_b_state[GRU_B_STATE_SIZE];\n"
        "} NNetState;\n\n"
        "typedef struct {\n" + "\n".join(t.struct) + "\n} LPCNetModel;\n\n"
        "int init_lpcnet_model(LPCNetModel *model, const WeightArray *arrays);\n\n#endif\n"
    )
    # Sizes only: the PLC and DRED networks are not compiled into the benchmark.
    (out / "plc_data.h").write_text(
        note + '#ifndef PLC_DATA_H\n#define PLC_DATA_H\n#include "nnet.h"\n'
        "#define PLC_MAX_RNN_NEURONS 1\n"
        "typedef struct { int unused; } PLCModel;\n"
        "typedef struct { float unused; } PLCNetState;\n#endif\n"
    )
    (out / "dred_rdovae_constants.h").write_text(
        note + "#ifndef DRED_RDOVAE_CONSTANTS_H\n#define DRED_RDOVAE_CONSTANTS_H\n"
        "#define DRED_MAX_RNN_NEURONS 1\n#define DRED_MAX_CONV_INPUTS 1\n#endif\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="directory for nnet_data.[ch] and headers")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    t = build(args.seed)
    write(t, args.out, args.seed)
    print(
        json.dumps(
            {
                "sample_rate": 16000,
                "gru_a": GRU_A,
                "gru_b": GRU_B,
                "gru_a_density": GRU_A_DENSITY,
                "stored_weights": t.stored,
                "weights_read_per_sample": t.per_sample,
            }
        )
    )


if __name__ == "__main__":
    main()
