"""int8 LSTM inference on the CPU against ONNX Runtime's and torch's, written to docs/results/int8.md.

For each shape (T, B, I, H) and thread count, one process times, interleaved and on the same
weights (one torch.nn.LSTM layer, seeded), the fastest of ``--repeats`` rounds:
- gatedrnn int8: ``gatedrnn.quantize`` of the gatedrnn.LSTM (engine "int8", the numba/VNNI kernels
  of ``gatedrnn.engines.kernels.int8``), or, where the modules do not route to those kernels yet,
  the kernel's ``run`` on the same int8 weights, packed once (the table says which);
- gatedrnn float32 (engine "auto"), torch.nn float32, torch int8
  (``torch.ao.quantization.quantize_dynamic(model, {nn.LSTM})``);
- ONNX Runtime float32 on the exported LSTM, and ONNX Runtime int8:
  ``onnxruntime.quantization.quantize_dynamic(..., weight_type=QInt8)`` of that graph (its
  ``DynamicQuantizeLSTM``); sessions with ``session.intra_op.allow_spinning = "0"`` and
  ``intra_op_num_threads`` = the thread count.
Then the output error against float32 torch.nn on the same weights and input (max abs, and
relative: over max |y|) of gatedrnn int8 and ORT int8 with per_channel False and True.

Usage: python benchmarks/int8.py [--repeats N] [--threads 1,2] [--out PATH] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import tempfile
import warnings
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
import torch

import gatedrnn
from gatedrnn.engines.kernels import int8, int8_gemm
from gatedrnn.equations import kinds, quantized
from gatedrnn.equations.cells import CellOptions
from gatedrnn.toolkit.bench_common import fastest, machine

OUT = os.path.join(os.path.dirname(__file__), "..", "docs", "results", "int8.md")
SHAPES = [(200, 1, 64, 128), (200, 1, 256, 512), (50, 8, 512, 1024), (100, 32, 256, 256),
          (50, 32, 512, 1024)]
QUICK = [(20, 2, 16, 32)]
COLS = ["gatedrnn int8", "gatedrnn float32", "torch.nn float32", "torch int8", "ORT float32",
        "ORT int8"]
FAST = ("gatedrnn.engines.kernels.int8:run", "gatedrnn.engines.kernels.int8_variants:run")


def _ort(onnx: bytes, threads: int) -> Any:
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads, o.inter_op_num_threads = threads, 1
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(onnx, o, providers=["CPUExecutionProvider"])


def _export(model: torch.nn.Module, x: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the legacy exporter's deprecation and batch-size notes
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, dynamo=False, input_names=["x"],  # type: ignore[arg-type]
                          dynamic_axes={"x": {0: "T", 1: "B"}})
    return buf.getvalue()


def _ort_int8(onnx: bytes, per_channel: bool) -> bytes:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src, dst = os.path.join(d, "f.onnx"), os.path.join(d, "q.onnx")
        with open(src, "wb") as f:
            f.write(onnx)
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=per_channel)
        with open(dst, "rb") as f:
            return f.read()


def _int8_call(ours: torch.nn.Module, x: torch.Tensor) -> tuple[Callable[[], Any], str]:
    """gatedrnn's int8 forward: the quantized module where it runs the kernels, else the kernel."""
    if kinds.CELLS["lstm"].engines.get("int8") in FAST:
        q = gatedrnn.quantize(ours).eval()
        with torch.no_grad():
            q(x)
        if getattr(q, "last_engine", None) == "int8":
            def module() -> Any:
                with torch.no_grad():
                    return q(x)[0]
            return module, "gatedrnn.quantize"
    opts = CellOptions("lstm")
    w = quantized.quantize_weights({"w_ih": ours.weight_ih_l0, "w_hh": ours.weight_hh_l0,
                                    "b_ih": ours.bias_ih_l0, "b_hh": ours.bias_hh_l0})
    w = {**w, **int8.pack(w, opts)}
    B, H = x.shape[1], ours.hidden_size
    state = (torch.zeros(B, H), torch.zeros(B, H))

    def kernel() -> Any:
        return int8.run(x, state, w, None, False, opts, {}, False)[0]
    return kernel, "kernels.int8.run"


def measure(shape: tuple[int, int, int, int], threads: int, repeats: int
            ) -> tuple[dict[str, float], dict[str, tuple[float, float]], str]:
    """Seconds per call of each column, and the errors (max abs, relative) against float32."""
    T, B, I, H = shape
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    peer = torch.nn.LSTM(I, H).eval()
    ours = gatedrnn.LSTM(I, H).eval()
    ours.load_state_dict(peer.state_dict())
    x = torch.randn(T, B, I)
    with warnings.catch_warnings():  # torch's eager quantization prints a deprecation notice
        warnings.simplefilter("ignore")
        tq = torch.ao.quantization.quantize_dynamic(peer, {torch.nn.LSTM}, dtype=torch.qint8)
    onnx = _export(peer, x)
    feed = {"x": x.numpy()}
    ort32, ort8 = _ort(onnx, threads), _ort(_ort_int8(onnx, False), threads)
    ours8, how = _int8_call(ours, x)

    def nograd(m: torch.nn.Module) -> Callable[[], Any]:
        def go() -> Any:
            with torch.no_grad():
                return m(x)[0]
        return go

    fns = {"gatedrnn int8": ours8, "gatedrnn float32": nograd(ours),
           "torch.nn float32": nograd(peer), "torch int8": nograd(tq),
           "ORT float32": lambda: ort32.run(None, feed)[0],
           "ORT int8": lambda: ort8.run(None, feed)[0]}
    times = fastest(fns, repeats)
    errors: dict[str, tuple[float, float]] = {}
    if threads == 1:
        want = nograd(peer)().numpy()
        got = {"gatedrnn int8": np.asarray(ours8()), "ORT int8 (per_channel=False)":
               ort8.run(None, feed)[0].reshape(want.shape), "ORT int8 (per_channel=True)":
               _ort(_ort_int8(onnx, True), 1).run(None, feed)[0].reshape(want.shape)}
        for name, y in got.items():
            err = float(np.abs(y - want).max())
            errors[name] = (err, err / float(np.abs(want).max()))
    return times, errors, how


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="interleaved rounds (fastest counts)")
    ap.add_argument("--threads", default="1,2", help="comma list of thread counts")
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--quick", action="store_true", help="a smoke test: a tiny shape, one round")
    a = ap.parse_args(argv)
    shapes, repeats = (QUICK, 1) if a.quick else (SHAPES, a.repeats)
    tables, errs, how = [], [], ""
    for n in (int(t) for t in a.threads.split(",")):
        rows = ["| LSTM (T, B, I, H) | " + " | ".join(f"{c} ms" for c in COLS)
                + " | ORT int8 / gatedrnn int8 | gatedrnn float32 / int8 |",
                "|---|" + "---:|" * (len(COLS) + 2)]
        for shape in shapes:
            t, e, how = measure(shape, n, repeats)
            ms = [f"{t[c] * 1e3:.2f}" for c in COLS]
            rows.append(f"| {shape} | " + " | ".join(ms) + f" | {t['ORT int8'] / t['gatedrnn int8']:.2f}"
                        f" | {t['gatedrnn float32'] / t['gatedrnn int8']:.2f} |")
            for name, (ab, rel) in e.items():
                errs.append(f"| {shape} | {name} | {ab:.4f} | {rel:.4f} |")
            print(rows[-1], flush=True)
        tables += [f"### {n} thread{'s' if n > 1 else ''}", "", *rows, ""]
    import onnxruntime

    text = "\n".join([
        "# int8 inference against ONNX Runtime and torch", "",
        f"Written by `python benchmarks/int8.py` on {datetime.date.today()}: {machine()}, "
        f"onnxruntime {onnxruntime.__version__}, numba {numba.__version__}; the int8 kernels ran "
        f"on {int8_gemm.ISA_NAMES[int8_gemm.ISA]} ({how}). One LSTM layer, inference, "
        f"the same weights everywhere; each figure is the fastest of {repeats} interleaved rounds "
        "(ms per call). The ratios are the other's time over gatedrnn int8's (> 1: gatedrnn int8 "
        "is faster). Targets: ORT int8 / gatedrnn int8 >= 1.0 at every shape and thread count; "
        "gatedrnn float32 / int8 >= 3 at (200, 1, 256, 512) and (50, 8, 512, 1024).", "",
        "## Time", "", *tables,
        "## Output error against float32 torch.nn (same weights and input)", "",
        "Relative = max abs error / max |y|. gatedrnn int8: weights per row, activations per row "
        "and per step (the scheme of `gatedrnn.equations.quantized`); ORT int8: "
        "`DynamicQuantizeLSTM`, activations per tensor (uint8, asymmetric).", "",
        "| LSTM (T, B, I, H) | int8 path | max abs | relative |", "|---|---|---:|---:|", *errs, ""])
    print(text)
    if not a.quick:
        with open(a.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
