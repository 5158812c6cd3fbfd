"""Which engine ``engine="auto"`` runs for one call: the first matching row of a measured table.

The engines (see ``gatedrnn.engines.stack`` and ``gatedrnn.modules``):
- "native": torch's own recurrent ops on the module's parameters (torch.nn's forward itself):
  cuDNN on CUDA, oneDNN for the float32 and bfloat16 LSTM on the CPU, a generic loop otherwise.
- "fused": gatedrnn's numba kernels (CPU, float32 and float64, every variant).
- "fused-float32": the fused kernels on a bfloat16 or float16 call: inputs, state and weights are
  cast to float32 inside the autograd graph, the outputs cast back (half storage, float32 sums).
- "reference": the eager loop over ``gatedrnn.equations.cells``; any device and dtype, every variant.
- "scan": the log-space parallel scan of minGRU and minLSTM (``gatedrnn.equations.scan``).

Which engines a cell kind has is its declaration's (``gatedrnn.equations.kinds``); this table only
says which of them ``engine="auto"`` picks.

``choose`` describes a call by a few features and returns the engine of the first row of
``TABLE`` that matches them. The rows come from ``benchmarks/dispatch.py``, which times every
engine over a grid of shapes and prints, per row, the fastest engine next to the one this rule
picks; re-run it on a quiet machine and move the rows where they disagree. The seed figures are
those of the README's speed section (CPU, 2 threads).

Example:
    >>> from gatedrnn.engines import dispatch
    >>> dispatch.choose("cuda", "GRU", "float32", torch_op=True, simple=True, training=True, batch=8)
    'native'
    >>> dispatch.choose("cpu", "GRU", "float32", torch_op=True, simple=True, training=True, batch=8)
    'fused'
    >>> dispatch.choose("cuda", "LSTM", "float32", torch_op=False, simple=True, training=True,
    ...                 batch=8, triton=True)  # a variant on a GPU with triton
    'triton'
    >>> dispatch.choose("cuda", "mingru", "float32", torch_op=False, simple=True, training=True,
    ...                 batch=8)
    'scan'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

ENGINES = ("auto", "reference", "fused", "native")

DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.bfloat16: "bfloat16",
          torch.float16: "half"}
HALF = ("half", "bfloat16")  # the two 16-bit float keys


def _amx() -> bool:
    """The CPU has AMX tiles (Intel Sapphire Rapids and later), where oneDNN runs bfloat16
    products on the tile unit."""
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # an older torch, or no way to ask
        return False


AMX = _amx()


@dataclass(frozen=True)
class Row:
    """One row of the table: the engine, and the features a call must have (None: any)."""

    engine: str
    device: str | None = None  # "cpu" or "other" (CUDA, MPS, ...)
    # "LSTM", "GRU", "RNN", a cell class ("LSTMCell", ...), or a declared kind without a torch
    # op ("mingru", ...); a tuple matches any of its members (dtype likewise)
    kind: str | tuple[str, ...] | None = None
    dtype: str | tuple[str, ...] | None = None  # "float32", "float64", "half", "bfloat16", "other"
    torch_op: bool | None = None  # torch has an op for it: no variant, no return_gates, one head
    simple: bool | None = None  # neither packed nor proj_size: where oneDNN runs the LSTM
    proj: bool | None = None  # an LSTM with proj_size
    training: bool | None = None  # autograd records the call
    min_batch: int = 0
    max_batch: int | None = None  # the row matches batch sizes min_batch <= N <= max_batch
    max_work: int | None = None  # ... and calls of at most this work T·N·H (None: any)
    triton: bool | None = None  # the Triton engine can run the call (triton imports, CUDA tensor)
    amx: bool | None = None  # the CPU has AMX tiles (``AMX``)


_DECLARED = ("mingru", "minlstm", "slstm")
_CELLS = ("LSTMCell", "GRUCell", "RNNCell")  # the cell classes: one step per call

TABLE: tuple[Row, ...] = (
    # minGRU, minLSTM, sLSTM: torch has no op for them. Their numba kernels on the CPU in float32
    # and float64 (measured against the reference loop and the scan by benchmarks/cell_targets.py:
    # the fused scan is both faster and more accurate than the log-space scan on a CPU, see
    # gatedrnn.equations.scan). Off the CPU the log-space scan's parallel depth pays off for the
    # minimal cells; sLSTM's gates see h, so it has no scan. Everything else (a CPU's bfloat16,
    # sLSTM off the CPU): the reference loop.
    Row("fused", device="cpu", kind=_DECLARED, dtype=("float32", "float64")),
    # On a GPU the Triton kernels, where triton imports (planned from the design, not yet
    # measured: docs/gpu.md; a GPU run of benchmarks/gpu.py moves these rows).
    Row("triton", device="other", kind=_DECLARED, triton=True),
    Row("scan", device="other", kind=("mingru", "minlstm")),
    Row("reference", kind=_DECLARED, torch_op=False),
    # Cells under autograd on the CPU: one autograd node (engines.step_grad: a numba forward and a
    # hand-derived numba backward) against torch's cell op, whose ~10 ops are each a node. Measured
    # (I = 32, H = 64, forward + backward, 1 thread, shared machine): LSTMCell 1.28-1.45x
    # torch.nn's time at B = 1-8, GRUCell 1.49-1.70x. RNNCell: torch's op, whose tanh cell is ~4
    # ops: the one-node step measured 0.81x torch.nn at B = 1 and 8 (interleaved, 15 rounds),
    # torch's op through gatedrnn 0.95-0.99x. Elsewhere torch's op.
    Row("fused", device="cpu", kind=("LSTMCell", "GRUCell"), dtype=("float32", "float64"),
        torch_op=True, training=True),
    Row("native", kind=_CELLS, torch_op=True, training=True),
    Row("reference", kind=_CELLS, torch_op=False),
    # Off the CPU numba cannot run: torch's op (cuDNN) wherever it computes the call.
    Row("native", device="other", torch_op=True),
    # What cuDNN has no op for (variants, heads, return_gates, Cho's GRU): the Triton kernels
    # where they run, the reference loop otherwise (planned from the design, not yet measured).
    Row("triton", device="other", kind=("LSTM", "GRU"), triton=True),
    Row("reference", device="other"),
    Row("native", dtype="other", torch_op=True),
    Row("reference", dtype="other"),
    # CPU LSTM without packing or projection: torch runs oneDNN (float32). Measured by
    # benchmarks/dispatch.py (CPU, 2 threads, fastest of 3 interleaved; README "Speed"):
    # - float32 inference: native 1.2-1.3x faster than fused from B = 16 to 64 (7.3 vs 9.8 ms,
    #   11.9 vs 14.3, 59.7 vs 77.2), level at B = 256 (101 vs 97); fused at B = 1 (2.5 vs 3.0).
    # - float32 training: native at B = 1 and 16 (5.4 vs 5.9 ms, 18.2 vs 20.6), level at B = 32
    #   (29.9 vs 28.5), fused from B = 64 (161.8 vs 197.7; 277 vs 331 at B = 256). On an Intel
    #   Xeon with AVX-512 (benchmarks/speed.py, docs/results/speed-lstm-gru.md) native was ahead at
    #   B = 32 (13.9 vs 15.8 ms at 2 threads, 24.0 vs 28.0 at 1) and fused still from B = 64
    #   (88.9 vs 107.0, 171.7 vs 196.6). Moving this row to B <= 32 changes the engine, and so the
    #   last bits, of the toolkit's LSTM runs at batch 32 (the published learning results), so it
    #   waits for those to be rerun with it.
    # Measured (1 thread, torch.nn's time / gatedrnn's): a short call runs the step kernels
    # (engines.one_step) 1.46-1.53x at (T, B, I, H) = (5, 4, 32, 64), where the fused time loops
    # ran 0.75x; at (20, 8, 64, 128) oneDNN wins from B = 4 too (fused 0.63, step kernels 0.46).
    Row("fused", device="cpu", kind="LSTM", dtype="float32", torch_op=True, simple=True,
        training=False, max_work=4096),
    Row("native", device="cpu", kind="LSTM", dtype="float32", torch_op=True, simple=True,
        training=False, min_batch=4),
    # Small training calls (forward + backward, 1 thread, the engines interleaved, torch.nn's
    # time / the engine's; work = T·B·H): the LSTM at (T, B, I, H) = (1, 1, 16, 32)
    # runs as one step_grad node 2.1x torch.nn (native 0.9x), at (5, 4, 32, 64) oneDNN wins
    # (native 1.0x, step_grad 0.8x); torch.nn's Elman RNN is cheap up to (5, 4, 32, 64) (native
    # 0.9-1.0x, step_grad 0.77-0.96x, fused 0.67-0.85x) and fused wins at (20, 8, 64, 128) (1.5-2.9x).
    Row("fused", device="cpu", kind="LSTM", dtype="float32", torch_op=True, simple=True,
        training=True, max_work=512),
    Row("native", device="cpu", kind="RNN", dtype="float32", torch_op=True, simple=True,
        training=True, max_work=4096),
    Row("native", device="cpu", kind="LSTM", dtype="float32", torch_op=True, simple=True,
        training=True, max_batch=31),
    # float64 has no oneDNN: torch's generic loop (addmm per step) beats our float64 kernels in
    # inference from B = 32, packed and proj_size included (LSTM 28.7 vs 30.1 ms, packed 21.3 vs
    # 31.4; GRU 21.6 vs 25.6), and loses at B = 1 (fused 2-2.5x) and in training (fused 1.2-4x).
    Row("native", device="cpu", kind="LSTM", dtype="float64", torch_op=True, training=False,
        min_batch=16),
    Row("native", device="cpu", kind="GRU", dtype="float64", torch_op=True, training=False,
        min_batch=16),
    # bfloat16 LSTM on a CPU with AMX (an Intel Xeon; benchmarks/dispatch.py, 2 threads, native
    # against fused-float32 ms): oneDNN runs it on the tile unit. Inference without proj_size:
    # native at B = 1 (1.19 vs 1.67, packed 1.23 vs 1.82) and B = 64 (7.8 vs 35.8, packed 21.3 vs
    # 36.3). Training: plain native at B = 64 (45.3 vs 80.6) but fused at B = 1 (4.2 vs 6.5), the
    # switch at B = 32 not measured between; packed fused at both (5.2 vs 6.5, 82 vs 219). With
    # proj_size torch leaves oneDNN and fused-float32 is 2.4-6.7x torch.nn.
    Row("native", device="cpu", kind="LSTM", dtype="bfloat16", torch_op=True, amx=True,
        proj=False, training=False),
    Row("native", device="cpu", kind="LSTM", dtype="bfloat16", torch_op=True, amx=True,
        simple=True, training=True, min_batch=32),
    # Everything else on the CPU (GRU 1.0-12x, RNN 1.1-6x, packed, proj_size, variants): fused.
    # Half precision through float32: without AMX (an AMD EPYC) torch.nn's bfloat16 LSTM and GRU
    # measured 5-27x slower than fused-float32 (LSTM (100, 64, 256, 256) inference 434 vs 61 ms);
    # with AMX the GRU and the Elman RNN still run 1.7-5.5x faster fused-float32.
    Row("fused-float32", dtype=HALF),
    Row("fused"),
)


def _matches(row: Row, features: Mapping[str, object], batch: int, work: int | None) -> bool:
    if batch < row.min_batch or (row.max_batch is not None and batch > row.max_batch):
        return False
    if row.max_work is not None and (work is None or work > row.max_work):
        return False
    for key, value in features.items():
        want = getattr(row, key)
        if not (want is None or want == value or (type(want) is tuple and value in want)):
            return False
    return True


# choose's answers for TABLE, by the call's features: walking the table costs ~5 µs, a call of a
# small cell ~20. Bounded: a stream of ever-new (batch, work) pairs restarts it.
_CHOSEN: dict[tuple, str] = {}


def choose(device_type: str, kind: str, dtype: str, *, torch_op: bool, simple: bool,
           training: bool, batch: int, work: int | None = None, triton: bool = False,
           proj: bool = False, table: tuple[Row, ...] = TABLE) -> str:
    """The engine for a call with these features (a pure function: no tensors, no device).

    device_type: ``tensor.device.type``; kind: "LSTM" | "GRU" | "RNN" | "LSTMCell" | "GRUCell" |
    "RNNCell" | "mingru" | "minlstm" | "slstm"; dtype: a key of ``DTYPES``' values or "other";
    batch: the batch size N;
    work: T·N·H (time steps, batch, hidden size), or None when the caller does not know it (rows
    with ``max_work`` then do not match); triton: the Triton engine can run the call (triton
    imports and the tensor is on CUDA; ``gatedrnn.engines.stack.triton_ready``); proj: an LSTM
    with ``proj_size``. Whether the CPU has AMX (``AMX``) is a feature of every call.
    """
    key = (device_type, kind, dtype, torch_op, simple, training, batch, work, triton, proj)
    if table is TABLE:
        engine = _CHOSEN.get(key)
        if engine is not None:
            return engine
    features = {"device": "cpu" if device_type == "cpu" else "other", "kind": kind,
                "dtype": dtype, "torch_op": torch_op, "simple": simple, "training": training,
                "triton": triton, "proj": proj, "amx": AMX}
    for row in table:
        if _matches(row, features, batch, work):
            if table is TABLE:
                if len(_CHOSEN) > 4096:
                    _CHOSEN.clear()
                _CHOSEN[key] = row.engine
            return row.engine
    raise AssertionError("the last row of the table matches every call")  # pragma: no cover


def dtype_key(dtype: torch.dtype) -> str:
    """The table's name for a dtype."""
    return DTYPES.get(dtype, "other")
