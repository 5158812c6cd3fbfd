"""The Triton engine against the reference engine, on the CPU through Triton's interpreter.

Every cell and variant equals the reference engine in float32 (outputs, final states, recorded
gates, and the gradients of x, every state and every weight), forward and reverse, packed or not,
as a hypothesis property over tiny configurations (the interpreter costs milliseconds per kernel
call); heads of 16 or more units take the persistent head-wise kernels. Each autograd Function
passes gradcheck in float64; double backward goes through the reference engine; half-precision
storage computes in float32; the layer stack (two layers, bidirectional, packed) runs; without
CUDA or the interpreter the engine refuses clearly; every kernel compiles for sm_80 and sm_90
without spilling (``triton_compile_check.py``); and ``benchmarks/gpu.py --smoke`` runs.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported
pytest.importorskip("triton", reason="triton is in the gpu extra")

import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from gatedrnn.engines import stack  # noqa: E402
from gatedrnn.engines import triton as engine  # noqa: E402
from gatedrnn.equations import reference  # noqa: E402
from gatedrnn.equations.cells import CellOptions  # noqa: E402
from triton_helpers import assert_same, case, masks, outputs_and_grads, weights  # noqa: E402

if not (torch.cuda.is_available() or engine.interpreting()):
    pytest.skip("TRITON_INTERPRET is set to something other than 1 and there is no GPU",
                allow_module_level=True)

from gatedrnn.engines.triton import gru, lstm, minrnn, slstm  # noqa: E402

SMALL = settings(max_examples=10, deadline=None)
RUNS = {"lstm": lstm.run, "gru": gru.run, "slstm": slstm.run, "mingru": minrnn.run,
        "minlstm": minrnn.run}


def reference_of(mode: str):
    """The reference engine with the unified signature."""
    return reference.run  # one contract for every cell kind (opts.mode names it)


def check_against_reference(mode: str, opts: CellOptions, *, T: int, B: int, H: int, heads: int,
                            packed: bool, reverse: bool, recurrent: bool = False, bias: bool = True,
                            peephole: bool = False, seed: int = 0) -> None:
    I = 3
    w = weights(mode, I, H, heads=heads, bias=bias, peephole=peephole,
                layer_norm=opts.layer_norm, seed=seed)
    x, state, sizes = case(mode, T, B, I, H, packed=packed, seed=seed)
    m = masks(opts, T, B, H, recurrent, seed=seed)
    expected = outputs_and_grads(reference_of(mode), x, state, w, sizes, reverse, opts, m)
    got = outputs_and_grads(RUNS[mode], x, state, w, sizes, reverse, opts, m)
    assert_same(expected, got)


zoneouts = st.sampled_from(["off", "train", "eval"])


def _zone(kind: str, p: float) -> dict:
    return {} if kind == "off" else {"zoneout": p, "training": kind == "train"}


@SMALL
@given(ln=st.booleans(), peephole=st.booleans(), shape=st.sampled_from([(1, 4), (2, 4), (2, 32)]),
       zone=zoneouts, zone_cell=st.booleans(), recurrent=st.booleans(), reverse=st.booleans(),
       packed=st.booleans(), bias=st.booleans(), seed=st.integers(0, 9))
def test_lstm_equals_reference(ln, peephole, shape, zone, zone_cell, recurrent, reverse, packed,
                               bias, seed):
    """(heads, H): heads of 16 units without layer norm or peepholes run the persistent
    kernels (``lstm_heads``)."""
    heads, H = shape
    z = _zone(zone, 0.3)
    if z and zone_cell:
        z["zoneout_cell"] = 0.4
    opts = CellOptions("lstm", layer_norm=ln, **z)
    check_against_reference("lstm", opts, T=3, B=3, H=H, heads=heads, packed=packed,
                            reverse=reverse, recurrent=recurrent, bias=bias, peephole=peephole,
                            seed=seed)


@SMALL
@given(after=st.booleans(), ln=st.booleans(), shape=st.sampled_from([(1, 4), (2, 4), (2, 32)]),
       zone=zoneouts, recurrent=st.booleans(), reverse=st.booleans(), packed=st.booleans(),
       bias=st.booleans(), seed=st.integers(0, 9))
def test_gru_equals_reference(after, ln, shape, zone, recurrent, reverse, packed, bias, seed):
    """(heads, H): heads of 16 units, reset_after, no layer norm run the persistent kernels."""
    heads, H = shape
    opts = CellOptions("gru", reset_after=after, layer_norm=ln and after, **_zone(zone, 0.3))
    check_against_reference("gru", opts, T=3, B=3, H=H, heads=heads, packed=packed,
                            reverse=reverse, recurrent=recurrent, bias=bias, seed=seed)


@SMALL
@given(shape=st.sampled_from([(1, 8), (2, 8), (4, 8), (2, 32), (4, 64)]), reverse=st.booleans(),
       packed=st.booleans(), bias=st.booleans(), seed=st.integers(0, 9))
def test_slstm_equals_reference(shape, reverse, packed, bias, seed):
    """(heads, H): heads of 16 units and more run the persistent kernels (``slstm_heads``)."""
    heads, H = shape
    check_against_reference("slstm", CellOptions("slstm"), T=3, B=3, H=H, heads=heads,
                            packed=packed, reverse=reverse, bias=bias, seed=seed)


@SMALL
@given(kind=st.sampled_from(["mingru", "minlstm"]), T=st.integers(1, 5), reverse=st.booleans(),
       packed=st.booleans(), bias=st.booleans(), seed=st.integers(0, 9))
def test_minrnn_equals_reference(kind, T, reverse, packed, bias, seed):
    check_against_reference(kind, CellOptions(kind), T=T, B=3, H=5, heads=1, packed=packed,
                            reverse=reverse, bias=bias, seed=seed)


@pytest.mark.parametrize("kind", ["mingru", "minlstm"])
def test_minrnn_carries_the_state_across_chunks(kind):
    """T = 70 is two chunks of the scan (forward) and two of the reverse scan (backward)."""
    check_against_reference(kind, CellOptions(kind), T=70, B=2, H=5, heads=1, packed=True,
                            reverse=True)


def test_mingru_scan_is_more_accurate_than_the_log_space_scan():
    """Against a float64 run, at T = 256: the linear-space scan's error stays at float32 rounding,
    the log-space scan's grows with the cumulative sums (``gatedrnn.equations.scan``)."""
    from gatedrnn.equations import scan

    T, B, I, H = 256, 2, 3, 8
    w = weights("mingru", I, H, seed=1)
    x, (h0,), _ = case("mingru", T, B, I, H, packed=False, seed=1)
    with torch.no_grad():
        exact, _, _ = reference.run(x.double(), (h0.double(),),
                                    {k: v.double() for k, v in w.items()}, None, False,
                                    CellOptions("mingru"), {}, False)
        ours, _, _ = minrnn.run(x, (h0,), w, None, False, CellOptions("mingru"), {}, False)
        logspace, _, _ = scan.run(x, (h0,), w, None, False, CellOptions("mingru"), {}, False)
    err_ours = ((ours.double() - exact).abs() / exact.abs().clamp_min(1e-3)).max().item()
    err_log = ((logspace.double() - exact).abs() / exact.abs().clamp_min(1e-3)).max().item()
    assert err_ours < 1e-5
    assert err_ours <= err_log, (err_ours, err_log)


GRADCHECK_CASES = {
    "lstm": CellOptions("lstm", layer_norm=True, zoneout=0.3, zoneout_cell=0.2, training=True),
    "lstm_persistent": CellOptions("lstm", zoneout=0.3, zoneout_cell=0.2, training=True),
    "gru": CellOptions("gru", layer_norm=True, zoneout=0.3, training=True),
    "gru_cho": CellOptions("gru", reset_after=False, zoneout=0.3),
    "gru_persistent": CellOptions("gru", zoneout=0.3, training=True),
    "slstm": CellOptions("slstm"),
    "slstm_persistent": CellOptions("slstm"),
    "mingru": CellOptions("mingru"),
    "minlstm": CellOptions("minlstm"),
}


@pytest.mark.parametrize("name", sorted(GRADCHECK_CASES))
def test_gradcheck_float64(name):
    """The hand-derived backward of every loop, against finite differences (fast mode: random
    projections, a few evaluations per input)."""
    opts = GRADCHECK_CASES[name]
    mode = opts.mode
    T, B, I, H = 3, 2, 2, 32 if name.endswith("persistent") else 4
    w = weights(mode, I, H, heads=2 if mode in ("lstm", "slstm") or name == "gru_persistent" else 1,
                peephole=name == "lstm", layer_norm=opts.layer_norm, dtype=torch.float64)
    x, state, sizes = case(mode, T, B, I, H, packed=True, dtype=torch.float64)
    m = masks(opts, T, B, H, recurrent=mode in ("lstm", "gru"))
    m = {k: v.double() for k, v in m.items()}
    keys = [k for k, v in w.items() if v is not None]
    n = len(state)

    def f(x, *rest):
        st, ws = rest[:n], dict(zip(keys, rest[n:]))
        y, final, _ = RUNS[mode](x, st, ws, sizes, True, opts, m, False)
        return (y, *final)

    assert torch.autograd.gradcheck(f, (x, *state, *(w[k] for k in keys)), fast_mode=True)


def test_double_backward_goes_through_the_reference():
    """create_graph=True: a gradient penalty differentiates the reference engine's recompute."""
    opts = CellOptions("lstm", layer_norm=True)
    w = weights("lstm", 2, 4, peephole=True, layer_norm=True, dtype=torch.float64)
    x, state, sizes = case("lstm", 2, 2, 2, 4, packed=True, dtype=torch.float64)
    results = []
    for run in (reference.run, lstm.run):
        y, _, _ = run(x, state, w, sizes, False, opts, {}, False)
        (gx,) = torch.autograd.grad(y.pow(2).sum(), x, create_graph=True)
        results.append(torch.autograd.grad(gx.pow(2).sum(), [x, w["w_hh"], w["ln_c_w"]]))
    for a, b in zip(*results):
        torch.testing.assert_close(b, a)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_storage_computes_in_float32(dtype):
    opts = CellOptions("gru", layer_norm=True)
    w = weights("gru", 3, 4, layer_norm=True, dtype=dtype)
    x, state, _ = case("gru", 3, 2, 3, 4, packed=False, dtype=dtype)
    y, (h,), _ = gru.run(x, state, w, None, False, opts, {}, False)
    assert y.dtype == h.dtype == dtype
    y.float().sum().backward()
    assert x.grad is not None and x.grad.dtype == dtype and w["w_hh"].grad.dtype == dtype
    w32 = {k: v.detach().float() for k, v in w.items()}
    y32, _, _ = reference.run(x.detach().float(), (state[0].detach().float(),), w32, None, False,
                              opts, {}, False)
    torch.testing.assert_close(y.float(), y32, atol=2e-2, rtol=2e-2)


def test_bidirectional_packed_stack(monkeypatch):
    """Two bidirectional layers over a packed batch through ``stack.stacked``, with the
    Triton engine in place of the fused one."""
    opts = CellOptions("lstm", layer_norm=True, zoneout=0.2, training=True)
    spec = stack.StackSpec(num_layers=2, num_directions=2, recurrent_dropout=0.3,
                                training=True)
    H, I = 4, 3
    ws = [weights("lstm", I if k < 2 else 2 * H, H, layer_norm=True, peephole=True, seed=k)
          for k in range(4)]
    x, _, sizes = case("lstm", 3, 3, I, H, packed=True)
    states = [case("lstm", 1, 3, 1, H, packed=False, seed=10 + k)[1] for k in range(4)]
    results = []
    for run in (reference.run, lstm.run):
        monkeypatch.setattr(stack, "choose_engine", lambda *a, run=run: run)
        torch.manual_seed(0)  # the same masks for both
        y, finals, _ = stack.stacked(x, states, ws, sizes, opts, spec)
        leaves = [x, ws[0]["w_ih"], ws[3]["w_hh"], ws[2]["ln_c_w"], states[1][1]]
        results.append((y, *finals[3], *torch.autograd.grad(y.sum() + finals[3][1].sum(), leaves)))
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-4)


def test_run_for_every_mode():
    for mode, run in RUNS.items():
        assert engine.run_for(mode) is run
    with pytest.raises(ValueError, match="rnn_tanh"):
        engine.run_for("rnn_tanh")


def test_refuses_without_cuda_or_interpreter(monkeypatch):
    x = torch.zeros(2, 1, 3)
    w = weights("lstm", 3, 4)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not engine.available(x)
    with pytest.raises(RuntimeError, match='runs on CUDA tensors.*"auto" / "fused" / "reference"'):
        lstm.run(x, (torch.zeros(1, 4), torch.zeros(1, 4)), w, None, False, CellOptions("lstm"),
                 {}, False)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert engine.available(x)


def test_benchmark_smoke_runs():
    """benchmarks/gpu.py --smoke: the GPU script on tiny shapes through the interpreter."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parent.parent
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env.pop("OUT", None)
    result = subprocess.run([sys.executable, str(root / "benchmarks" / "gpu.py"), "--smoke"],
                            capture_output=True, text=True, timeout=300, env=env, cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("summary: checks 20/20 passed"), last


def test_every_kernel_compiles_for_gpus():
    """The real compiler (not the interpreter) lowers every kernel to sm_80 and sm_90 cubins
    (``tests/triton_compile_check.py``): types, constexpr branches and loops are accepted."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parent / "triton_compile_check.py"
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "compiled 64 kernels"
