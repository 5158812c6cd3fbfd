"""The shipped rules: the rows ``engine="auto"`` walks where no plan and no pinned table decides
(``dispatch.choose``), each with the measurements it rests on and the machine they come from
(``Row.measured_on``, ``rows.MACHINES``). The first row whose features all match a call names its
engine; ``Row`` and the matching are ``rows``'."""

from __future__ import annotations

from .rows import HALF, Row

_DECLARED = ("mingru", "minlstm", "slstm")
_CELLS = ("LSTMCell", "GRUCell", "RNNCell")  # the cell classes: one step per call

# The rows' figures: ms or torch.nn's time / gatedrnn's, 2 threads unless said; "xeon-spr" rows
# from benchmarks/dispatch.py --out docs/results/speed-dtypes.md unless said (see rows.MACHINES).
TABLE: tuple[Row, ...] = (
    # minGRU, minLSTM, sLSTM: torch has no op for them. Their numba kernels on the CPU in float32
    # and float64 (measured against the reference loop and the scan by benchmarks/cell_targets.py:
    # the fused scan is both faster and more accurate than the log-space scan on a CPU, see
    # gatedrnn.equations.scan). Off the CPU the log-space scan's parallel depth pays off for the
    # minimal cells; sLSTM's gates see h, so it has no scan. Everything else (a CPU's bfloat16,
    # sLSTM off the CPU): the reference loop.
    Row("fused", device="cpu", kind=_DECLARED, dtype=("float32", "float64"), measured_on="epyc"),
    # On a GPU the Triton kernels, where triton imports (planned from the design, not yet
    # measured: docs/gpu.md; a GPU run of benchmarks/gpu.py moves these rows).
    Row("triton", device="other", kind=_DECLARED, triton=True, measured_on="design"),
    Row("scan", device="other", kind=("mingru", "minlstm"), measured_on="design"),
    Row("reference", kind=_DECLARED, torch_op=False, measured_on="design"),
    # Cells under autograd on the CPU: one autograd node (engines.step_grad: a numba forward and a
    # hand-derived numba backward) against torch's cell op, whose ~10 ops are each a node. Measured
    # (I = 32, H = 64, forward + backward, 1 thread, shared machine): LSTMCell 1.28-1.45x
    # torch.nn's time at B = 1-8, GRUCell 1.49-1.70x. RNNCell: torch's op, whose tanh cell is ~4
    # ops: the one-node step measured 0.81x torch.nn at B = 1 and 8 (interleaved, 15 rounds),
    # torch's op through gatedrnn 0.95-0.99x. Elsewhere torch's op.
    # The one-node step computes its weight gradients on one thread, where torch's backward runs
    # MKL's GEMMs on two: it loses as B·H·(I + H) grows. Xeon, 2 threads, fastest of 21
    # interleaved, 10 steps a round, torch.nn / one-node step (native 0.91-1.11), (B, I, H):
    # LSTMCell (1, 64, 128) 1.28, (8, 64, 128) 1.11, (16, 64, 128) 1.18, (32, 64, 128) 0.86-0.90,
    # (16, 32, 64) 1.07, (64, 32, 64) 0.93, (4, 128, 256) 1.09, (8, 128, 256) 0.91-0.98,
    # (16, 128, 256) 0.91, (32, 128, 256) 0.81, (2, 256, 512) 0.58, (8, 256, 512) 0.89;
    # GRUCell (1, 64, 128) 1.37, (8, 64, 128) 1.23, (16, 64, 128) 1.14, (32, 64, 128) 1.00-1.09,
    # (64, 64, 128) 0.90, (16, 32, 64) 1.50, (64, 32, 64) 1.04, (4, 128, 256) 1.13,
    # (8, 128, 256) 1.04-1.08, (16, 128, 256) 0.88-0.96, (2, 256, 512) 0.78, (8, 256, 512) 0.97.
    # So the step up to a work B·H of 2048 (LSTMCell) and 4096 (GRUCell) from H = 128 down, and
    # of 1024 and 2048 at H = 129-256.
    Row("fused", device="cpu", kind=("LSTMCell", "GRUCell"), dtype=("float32", "float64"),
        torch_op=True, training=True, max_hidden=128, max_work=2048, measured_on="xeon-spr"),
    Row("fused", device="cpu", kind="GRUCell", dtype=("float32", "float64"), torch_op=True,
        training=True, max_hidden=128, max_work=4096, measured_on="xeon-spr"),
    Row("fused", device="cpu", kind=("LSTMCell", "GRUCell"), dtype=("float32", "float64"),
        torch_op=True, training=True, max_hidden=256, max_work=1024, measured_on="xeon-spr"),
    Row("fused", device="cpu", kind="GRUCell", dtype=("float32", "float64"), torch_op=True,
        training=True, max_hidden=256, max_work=2048, measured_on="xeon-spr"),
    Row("native", kind=_CELLS, torch_op=True, training=True, measured_on="epyc"),
    Row("reference", kind=_CELLS, torch_op=False, measured_on="design"),
    # Off the CPU numba cannot run: torch's op (cuDNN) wherever it computes the call.
    Row("native", device="other", torch_op=True, measured_on="design"),
    # What cuDNN has no op for (variants, heads, return_gates, Cho's GRU): the Triton kernels
    # where they run, the reference loop otherwise (planned from the design, not yet measured).
    Row("triton", device="other", kind=("LSTM", "GRU"), triton=True, measured_on="design"),
    Row("reference", device="other", measured_on="design"),
    Row("native", dtype="other", torch_op=True, measured_on="design"),
    Row("reference", dtype="other", measured_on="design"),
    # CPU LSTM without packing or projection: torch runs oneDNN (float32). Measured by
    # benchmarks/dispatch.py (fastest of 3 interleaved; README "Speed"):
    # - float32 inference: native 1.2-1.3x faster than fused from B = 16 to 64 (7.3 vs 9.8 ms,
    #   11.9 vs 14.3, 59.7 vs 77.2), level at B = 256 (101 vs 97); fused at B = 1 (2.5 vs 3.0);
    #   on the Xeon native at B = 64 (23.7 vs 34.0 ms), level at B = 1 (1.19 vs 1.16).
    # - float32 training: native at B = 1 and 16 (5.4 vs 5.9 ms, 18.2 vs 20.6), level at B = 32
    #   (29.9 vs 28.5), fused from B = 64 (161.8 vs 197.7; 277 vs 331 at B = 256). On an Intel
    #   Xeon with AVX-512 (benchmarks/speed.py, docs/results/speed-lstm-gru.md) native was ahead at
    #   B = 32 (13.9 vs 15.8 ms at 2 threads, 24.0 vs 28.0 at 1) and fused still from B = 64
    #   (88.9 vs 107.0, 171.7 vs 196.6); on a Zen 3 (AVX2) native 17% ahead at B = 32.
    #   This Xeon (interleaved, fastest of 7, shared machine, noisy), native against fused ms:
    #   1 thread: (100, 16, 128, 128) 44.0 vs 56.8, (100, 32, 128, 128) 72.5 vs 91.9, (100, 32, 1,
    #   64) 12.9 vs 15.4, (100, 64, 128, 128) 163.7 vs 111.8. So native up to the border between
    #   B = 32 and 64 (45, their geometric mean). The published learning runs (LSTM training at
    #   B = 32) pin TABLES["2026-11"], which kept B = 32 on fused.
    # Measured (1 thread, torch.nn's time / gatedrnn's): a short call runs the step kernels
    # (engines.one_step) 1.46-1.53x at (T, B, I, H) = (5, 4, 32, 64), where the fused time loops
    # ran 0.75x; at (20, 8, 64, 128) oneDNN wins from B = 4 too (fused 0.63, step kernels 0.46).
    Row("fused", device="cpu", kind="LSTM", dtype="float32", torch_op=True, simple=True,
        training=False, max_work=4096, measured_on="epyc"),
    Row("native", device="cpu", kind="LSTM", dtype="float32", torch_op=True, simple=True,
        training=False, min_batch=4, measured_on="epyc"),
    # B < 4, by hidden size: at equal work a step's product grows as H², and the fused loops'
    # per-step overhead (one batch row to one thread) counts less as H grows. Inference, torch.nn's
    # time / the engine's, fused and native (torch's op through gatedrnn):
    # - 1 thread (pinned, CPU time, fastest of 9-11 interleaved), T = 200, I = 64, B = 1: H = 32
    #   0.87 and 0.94, 64 0.82 and 0.94, 128 0.97 and 0.97, 192 0.91 and 0.98, 256 1.10 and
    #   1.00; (200, 1, 128, 384) 1.21 and 1.00, (100, 1, 32, 512) 1.06 and 0.99: native up to
    #   H = 221, between 192 and 256 (the kernels before their December rework: fused 0.78-0.83
    #   up to H = 256, level at 384). B = 2 and 3 native at every H: (200, 2, 64, 64) 0.60 and
    #   0.95, (200, 2, 64, 128) 0.63 and 1.02, (200, 3, 64, 256) 0.79 and 0.96.
    # - 2 threads (wall clock, fastest of 15-25, busy shared machine: noisy; two runs), B = 1:
    #   H = 32 2.13 and 0.97, 64 1.34 and 0.97 / 1.06 and 0.86, 96 1.65 and 1.22 / 1.24 and 0.97
    #   (oneDNN's two-thread team costs more than the product), 128 0.98 and 1.00 / 0.88 and 0.96
    #   (docs/results/speed-lstm-gru.md, quiet machine: 0.87 and 0.98), 192 native 0.97,
    #   (200, 1, 128, 256) 0.72 and 0.97, (100, 1, 128, 256) 0.84 and 1.22: native from H = 111.
    # - Since one or two rows run on a packed W_hh (kernels.pair, kernels.gemv), 1 thread, T = 200
    #   (100 at H = 384), I = 64 (192), fused and native, two runs: an ad-hoc loop (fastest of 7
    #   interleaved) and `benchmarks/fused_vs_native.py --cell lstm --mode inference --peer
    #   --threads 1`. B = 1: H = 32 0.86 / 0.68 and 0.92 / 0.92, 64 0.96 / 0.85 and 0.95 / 0.93,
    #   128 1.04 / 1.01 and 0.97 / 1.00, 192 1.12 / 1.12, 256 1.17 / 1.21, 384 1.20 / 1.17 (native
    #   0.97-0.99). B = 2: H = 32 1.02 / 0.88 and 0.99 / 0.93, 64 1.05 / 0.96 and 0.98 / 0.99,
    #   128 1.08 / 1.07, 256 1.18 / 1.27, 384 1.69 / 1.05 (native 0.94-1.03). So native up to
    #   H = 90 (between 64 and 128) at B = 1-2, and for B = 3.
    Row("native", device="cpu", kind="LSTM", dtype="float32", torch_op=True, simple=True,
        training=False, max_threads=1, min_batch=3, measured_on="xeon-spr"),
    Row("native", device="cpu", kind="LSTM", dtype="float32", torch_op=True, simple=True,
        training=False, max_threads=1, max_batch=2, max_hidden=90, measured_on="xeon-spr"),
    # One row on two threads once W_hh outgrows a core's L2: the fused loop splits the hidden
    # units over both threads (kernels.pair). Xeon, 2 threads, fastest of 5-7 interleaved,
    # torch.nn's time / fused's (native's ~0.94-1.05): (100, 1, ·, H) H = 320 1.51 and 0.92
    # (two runs), 384 1.67, 512 1.12, 0.84, 1.03, 1.15, 1.16; (50, 1, ·, H) 768 1.09, 1024 1.11,
    # 1.09, 1.13, 1.09, 1.08, 1.15: fused from H = 352. B = 2: 320 0.92, 384 0.97, 512 1.47,
    # 1.19, 1.47, 1.18, 1.21, 1.52, 768 1.11, 1024 0.93, 0.89, 1.00, 0.88, 0.85, 0.88 (each half's
    # W_hh, 8 MB, is L3's again): fused from H = 443 (between 384 and 512) to 887 (768-1024).
    Row("fused", device="cpu", kind="LSTM", dtype="float32", torch_op=True, simple=True,
        training=False, max_batch=1, min_threads=2, min_hidden=352, measured_on="xeon-spr"),
    Row("fused", device="cpu", kind="LSTM", dtype="float32", torch_op=True, simple=True,
        training=False, min_batch=2, max_batch=2, min_threads=2, min_hidden=443, max_hidden=887,
        measured_on="xeon-spr"),
    # One or two rows below L2's border, 2 threads, on the packed W_hh (kernels.gemv: one thread,
    # nothing to split), T = 200 (100 from H = 320), I = 64 (H / 2), fused, two runs (an ad-hoc
    # loop, fastest of 7 interleaved, and `benchmarks/fused_vs_native.py --cell lstm --mode
    # inference --peer --threads 2`): B = 1 H = 64 1.76 / 1.40, 96 1.51 / 1.25, 128 1.35 / 1.16,
    # 192 1.13 / 1.00, 256 0.97 / 0.86, 320 0.92 / 0.90, 384 0.97; B = 2 H = 64 2.11 / 1.72,
    # 96 1.72 / 1.47, 128 1.38 / 1.26, 192 1.11 / 1.09, 256 1.03 / 0.95, 320 0.87 / 0.73 (native
    # 0.93-1.02 in both): fused up to H = 221 (between 192 and 256).
    Row("fused", device="cpu", kind="LSTM", dtype="float32", torch_op=True, simple=True,
        training=False, max_batch=2, min_threads=2, max_hidden=221, measured_on="xeon-spr"),
    Row("native", device="cpu", kind="LSTM", dtype="float32", torch_op=True, simple=True,
        training=False, min_threads=2, min_hidden=111, measured_on="xeon-spr"),
    # B < 4 on two threads or more: the fused loops give one batch row to one thread, oneDNN
    # splits the product over both. 2 threads, inference, fastest of 15, native / fused ms:
    # (100, 1, 128, 256) 2.83 / 2.68, (200, 1, 64, 128) 1.66 / 1.82, (200, 1, 128, 256) 3.46 /
    # 5.56, (50, 2, 256, 512) 8.55 / 20.0, (100, 3, 128, 256) 3.29 / 4.50, (200, 1, 256, 512)
    # 19.5 / 40.1, (200, 1, 512, 1024) 91.1 / 158.6: native from work T·B·H = 36204, the
    # geometric mean of 25600 and 51200.
    Row("native", device="cpu", kind="LSTM", dtype="float32", torch_op=True, simple=True,
        training=False, min_threads=2, min_work=36204, measured_on="xeon-spr"),
    # Packed float32 inference at B = 64, (100, 64, 256, 256): native 30.7 vs fused 33.4 ms
    # (auto's fused was 0.91x torch.nn); GRU 22.5 vs 25.6 (0.88x). At B = 1 fused.
    Row("native", device="cpu", kind=("LSTM", "GRU"), dtype="float32", torch_op=True, simple=False,
        proj=False, training=False, min_batch=64, measured_on="xeon-spr"),
    # Packed LSTM float32 inference below B = 4 on two threads follows the plain border in H:
    # (200, 1, 64, 128) packed, 2 threads, fastest of 5, two runs of benchmarks/dispatch.py on a
    # noisy host: torch.nn 1.730 and 1.292 ms, fused 2.261 and 1.493, torch's op through
    # gatedrnn's general path 1.975 and 1.532 (the second run is docs/results/speed-dtypes.md).
    Row("native", device="cpu", kind="LSTM", dtype="float32", torch_op=True, simple=False,
        proj=False, training=False, max_batch=3, min_threads=2, min_hidden=111,
        measured_on="xeon-spr"),
    # GRU float32 inference at a few rows with a large W_hh, 2 threads: the fused loop's row
    # split gives each thread all of W_hh to stream (the units split, kernels.pair, takes B <= 2
    # only). Xeon, fastest of 5-7 interleaved, torch.nn's time / fused's (native's 0.89-1.18),
    # T = 50, I = H / 2: B = 3 H = 256 1.62, 384 0.94, 448 0.80, 512 0.66, 1024 0.65; B = 4
    # H = 512 0.50, 1024 0.62; B = 5 and 6 at H = 512 1.20 and 1.28, B = 6 H = 1024 1.01, B = 8
    # 1.08-1.38. B = 2 (the pair): H = 512 1.12, 640 0.95, 704 0.91, 768 0.86 and 0.91, 1024 0.75.
    # So native for B = 3-4 from H = 415 (between 384 and 448) and for B = 2 from H = 671.
    Row("native", device="cpu", kind="GRU", dtype="float32", torch_op=True, simple=True,
        training=False, min_batch=3, max_batch=4, min_threads=2, min_hidden=415,
        measured_on="xeon-spr"),
    Row("native", device="cpu", kind="GRU", dtype="float32", torch_op=True, simple=True,
        training=False, min_batch=2, max_batch=2, min_threads=2, min_hidden=671,
        measured_on="xeon-spr"),
    # Small training calls (forward + backward, 1 thread, the engines interleaved, torch.nn's
    # time / the engine's; work = T·B·H): the LSTM at (T, B, I, H) = (1, 1, 16, 32)
    # runs as one step_grad node 2.1x torch.nn (native 0.9x), at (5, 4, 32, 64) oneDNN wins
    # (native 1.0x, step_grad 0.8x); torch.nn's Elman RNN is cheap up to (5, 4, 32, 64) (native
    # 0.9-1.0x, step_grad 0.77-0.96x, fused 0.67-0.85x) and fused wins at (20, 8, 64, 128) (1.5-2.9x).
    # The LSTM's one-node steps beat oneDNN's one node for the sequence only up to two steps (Xeon,
    # 2 threads, fastest of 9, B = 1-4, H = 16-64, torch.nn / fused): T = 1 1.50-1.78, 2 1.15-1.34,
    # 4 0.85-0.95, 5 0.73-0.79; the general fused path at T = 6-16 0.65-0.80 (native 0.88-1.03).
    Row("fused", device="cpu", kind="LSTM", dtype="float32", torch_op=True, simple=True,
        training=True, max_work=512, max_steps=2, measured_on="xeon-spr"),
    Row("native", device="cpu", kind="RNN", dtype="float32", torch_op=True, simple=True,
        training=True, max_work=4096, measured_on="epyc"),
    # LSTM float32 training of one or two rows, 2 threads: the fused loops run both passes'
    # products on the packed GEMV (kernels.pair: W_hh from 96 steps at one row and 16 at two,
    # W_hh^T from 16). Xeon, benchmarks/fused_vs_native.py --mode training --peer, fastest of 7,
    # I = H / 2, torch.nn's time / fused's (native's 0.95-1.02): B = 1, T = 50 H = 32 0.78, 48
    # 0.95, 64 1.01, 128 1.06, 192 0.98, 224 0.92, 256 0.91, 320 0.77; T = 100 H = 48-192
    # 1.05-1.23, 224 0.97, 256 1.05, 320 0.64; T = 200 H = 48-192 1.06-1.45, 224 0.98, 256 1.02;
    # B = 2, T = 50-200 H = 32-192 1.06-1.65, 224-256 1.00-1.09, 320 0.43-0.52 (W_hh past
    # pair.MIN_BYTES: not packed). Short calls pay the general path's fixed cost: T = 40, B = 1
    # H = 64 0.91, 128 1.09, 192 0.99; B = 2 H = 48-192 1.08-1.12. So fused from a work T·B·H of
    # 4097, for H = 48-150 at B = 1 and 48-200 at B = 2. One thread, fused won only from T = 200
    # (1.02-1.28; T = 40-100 0.71-1.20): native.
    Row("fused", device="cpu", kind="LSTM", dtype="float32", torch_op=True, simple=True,
        training=True, max_batch=1, min_threads=2, min_hidden=48, max_hidden=150, min_work=4097,
        measured_on="xeon-spr"),
    Row("fused", device="cpu", kind="LSTM", dtype="float32", torch_op=True, simple=True,
        training=True, min_batch=2, max_batch=2, min_threads=2, min_hidden=48, max_hidden=200,
        min_work=4097, measured_on="xeon-spr"),
    Row("native", device="cpu", kind="LSTM", dtype="float32", torch_op=True, simple=True,
        training=True, max_batch=45, measured_on="xeon-spr"),
    # Packed LSTM training at B = 1, (200, 1, 64, 128): native 3.6 vs fused 4.4 ms; at B = 64
    # torch's packed training is 3x slower than fused (224 vs 74).
    Row("native", device="cpu", kind="LSTM", dtype="float32", torch_op=True, simple=False,
        proj=False, training=True, max_batch=1, measured_on="xeon-spr"),
    # float64 has no oneDNN: torch's generic loop (addmm per step) beats our float64 kernels in
    # inference from B = 32, packed and proj_size included (LSTM 28.7 vs 30.1 ms, packed 21.3 vs
    # 31.4; GRU 21.6 vs 25.6), and loses at B = 1 (fused 2-2.5x) and in training (fused 1.2-4x).
    # The Elman RNN likewise on the Xeon: at B = 64 (19.9 vs 28.7 ms, packed 16.7 vs 29.7) and at
    # (100, 32, 128, 128) (1 thread, 3 rounds, busy machine: 47.2 vs 138.8, packed 34.8 vs 126.7).
    Row("native", device="cpu", kind=("LSTM", "GRU"), dtype="float64", torch_op=True,
        training=False, min_batch=16, measured_on="epyc"),
    Row("native", device="cpu", kind="RNN", dtype="float64", torch_op=True, training=False,
        min_batch=16, measured_on="xeon-spr"),
    # Elman RNN float64 training, not packed: torch's loop from B = 32 (1 thread pinned, CPU
    # time, fastest of 7 interleaved, torch.nn's time / fused's and native's): (100, 16, 128, 128)
    # 1.00 and 0.92, (100, 16, 256, 256) 0.97 and 0.96, (100, 32, 128, 128) 0.82 and 0.99,
    # (100, 64, 256, 256) 0.82 and 0.98 (2 threads, docs/results/speed-dtypes.md: 0.89 and 0.93).
    # Native from B = 23, between 16 and 32. Packed stays fused (torch's packed backward: 1.9x).
    Row("native", device="cpu", kind="RNN", dtype="float64", torch_op=True, simple=True,
        training=True, min_batch=23, measured_on="xeon-spr"),
    # bfloat16 LSTM on a CPU with bfloat16 hardware: oneDNN runs it on AMX's tiles (Xeon) or
    # with avx512_bf16 (Zen 4). Xeon, native against fused-float32 ms: inference without proj_size
    # native at B = 1 (1.19 vs 1.67, packed 1.23 vs 1.82) and B = 64 (7.8 vs 35.8, packed 21.3
    # vs 36.3). Training: plain native at B = 64 (45.3 vs 80.6) but fused at B = 1 (4.2 vs 6.5);
    # packed fused at both (5.2 vs 6.5, 82 vs 219). Zen 4 at (100, 32, 128, 128): inference
    # 4.31 vs 8.67, training 14.6 vs 22.2. With proj_size torch leaves oneDNN: fused-float32 at
    # B = 1 (1.5 vs 12.4) but native at B = 64 on the Xeon (24.3 vs 28.5; packed 21.9 vs 28.6).
    Row("native", device="cpu", kind="LSTM", dtype="bfloat16", torch_op=True, bf16=True,
        proj=False, training=False, measured_on="xeon-spr"),
    Row("native", device="cpu", kind="LSTM", dtype="bfloat16", torch_op=True, amx=True,
        proj=True, training=False, min_batch=64, measured_on="xeon-spr"),
    Row("native", device="cpu", kind="LSTM", dtype="bfloat16", torch_op=True, bf16=True,
        simple=True, training=True, min_batch=32, measured_on="xeon-spr"),
    # bfloat16 GRU and Elman RNN inference on AMX at B = 64: torch's generic loop runs its GEMMs on
    # the tiles (GRU 17.9 vs 25.5 ms, packed 15.5 vs 26.0; RNN level plain, packed 8.2 vs 9.1).
    # At B = 1, and on Zen 4 (GRU at (100, 32, 128, 128): 8.92 vs 7.03), fused-float32.
    Row("native", device="cpu", kind=("GRU", "RNN"), dtype="bfloat16", torch_op=True, amx=True,
        training=False, min_batch=64, measured_on="xeon-spr"),
    # Everything else on the CPU (GRU 1.0-12x, RNN 1.1-6x, packed, proj_size, variants): fused.
    # Half precision through float32: without bfloat16 hardware (an AMD EPYC) torch.nn's
    # bfloat16 LSTM and GRU measured 5-27x slower than fused-float32 (LSTM (100, 64, 256, 256)
    # inference 434 vs 61 ms); with AMX the GRU and the Elman RNN training still run 1.7-5.5x
    # faster fused-float32.
    Row("fused-float32", dtype=HALF, measured_on="xeon-spr"),
    Row("fused", measured_on="epyc"),
)
