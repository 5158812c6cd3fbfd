"""``engine="triton"`` through the modules, on the CPU through Triton's interpreter.

Each module that declares the Triton engine (LSTM, GRU, SLSTM, MinGRU, MinLSTM) equals the same
module on the reference engine in float32: output, final state and the gradients of the input
and of every parameter, over packed, bidirectional and two-layer stacks with variants; the cells
refuse it (a cell is one step, the engine runs whole sequences); without CUDA or the interpreter
the module refuses clearly at the call.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported
pytest.importorskip("triton", reason="triton is in the gpu extra")

import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

import gatedrnn  # noqa: E402
from gatedrnn.engines import triton as engine  # noqa: E402

if not (torch.cuda.is_available() or engine.interpreting()):
    pytest.skip("TRITON_INTERPRET is set to something other than 1 and there is no GPU",
                allow_module_level=True)

I, H = 3, 4
BUILDS = {
    "lstm": lambda e, bi: gatedrnn.LSTM(I, H, num_layers=2, bidirectional=bi, layer_norm=True,
                                        peephole=True, engine=e),
    "lstm_heads": lambda e, bi: gatedrnn.LSTM(I, H, bidirectional=bi, num_heads=2, engine=e),
    "gru_cho": lambda e, bi: gatedrnn.GRU(I, H, bidirectional=bi, reset_after=False, engine=e),
    "gru_ln": lambda e, bi: gatedrnn.GRU(I, H, num_layers=2, layer_norm=True, zoneout=0.3,
                                         engine=e),
    "slstm": lambda e, bi: gatedrnn.SLSTM(I, H, bidirectional=bi, num_heads=2, engine=e),
    "mingru": lambda e, bi: gatedrnn.MinGRU(I, H, num_layers=2, bidirectional=bi, engine=e),
    "minlstm": lambda e, bi: gatedrnn.MinLSTM(I, H, bidirectional=bi, engine=e),
}


def _outputs_and_grads(module: torch.nn.Module, x: torch.Tensor, packed: bool) -> list[torch.Tensor]:
    x = x.clone().requires_grad_(True)
    inp = pack_padded_sequence(x, torch.tensor([3, 2, 1]), enforce_sorted=False) if packed else x
    out, state = module(inp)[:2]
    y = out.data if packed else out
    states = list(state) if isinstance(state, tuple) else [state]
    loss = (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum()
    loss = loss + sum((s * (k + 1)).sum() for k, s in enumerate(states))
    params = [p for p in module.parameters()]
    return [y.detach(), *[s.detach() for s in states], *torch.autograd.grad(loss, [x, *params])]


@settings(max_examples=8, deadline=None, derandomize=True)
@given(name=st.sampled_from(sorted(BUILDS)), bidirectional=st.booleans(), packed=st.booleans(),
       seed=st.integers(0, 99))
def test_modules_on_triton_equal_the_reference_engine(name, bidirectional, packed, seed) -> None:
    torch.manual_seed(seed)
    ref = BUILDS[name]("reference", bidirectional).eval()
    ours = BUILDS[name]("triton", bidirectional).eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 3, I, generator=torch.Generator().manual_seed(seed))
    want, got = _outputs_and_grads(ref, x, packed), _outputs_and_grads(ours, x, packed)
    assert ours.last_engine == "triton"
    # measured: at most ~1e-6 apart (float32 sums in another order)
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(b, a, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("cls", ["LSTMCell", "GRUCell", "RNNCell"])
def test_cells_do_not_take_the_triton_engine(cls) -> None:
    with pytest.raises(ValueError, match="engine"):
        getattr(gatedrnn, cls)(I, H, engine="triton")


def test_rnn_has_no_triton_engine() -> None:
    with pytest.raises(ValueError, match="engine"):
        gatedrnn.RNN(I, H, engine="triton")


def test_off_cuda_without_the_interpreter_the_module_refuses_clearly() -> None:
    code = ("import torch, gatedrnn\n"
            "for m in (gatedrnn.LSTM(3, 4, layer_norm=True, engine='triton'),"
            " gatedrnn.MinGRU(3, 4, engine='triton')):\n"
            "    try:\n"
            "        m(torch.randn(2, 1, 3))\n"
            "    except RuntimeError as e:\n"
            "        assert 'CUDA' in str(e) and 'reference' in str(e), e\n"
            "    else:\n"
            "        raise SystemExit('ran')\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
