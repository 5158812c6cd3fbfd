"""Running a recurrent module on per-sequence inputs and checking it against an independent
per-sequence implementation (an "oracle"): outputs, final states and every gradient.

Shared by the head-wise LSTM/GRU test (``test_heads.py``) and the newer cells' test
(``test_minimal_and_slstm.py``), whose oracles are written in those files.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence


def run_form(module: torch.nn.Module, seqs: list[torch.Tensor], hx: Any, form: str,
             batch_first: bool, nstate: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The module on ``seqs`` (each (L_b, I)) given as ``form`` ("padded", "packed" or
    "unbatched", one sequence); returns out (T, B, D·H) in the sequences' order and the state
    as a list of (L·D, B, H)."""
    if form == "packed":
        out, state = module(pack_sequence(seqs, enforce_sorted=False), hx)
        out = pad_packed_sequence(out)[0]  # (T, B, D·H), the original order
    elif form == "unbatched":
        hx1 = None if hx is None else (hx[:, 0] if nstate == 1 else tuple(q[:, 0] for q in hx))
        out, state = module(seqs[0], hx1)
        out = out[:, None]
        state = state[:, None] if nstate == 1 else tuple(q[:, None] for q in state)
    else:
        x = torch.stack(seqs, dim=1)  # (T, B, I)
        out, state = module(x.transpose(0, 1) if batch_first else x, hx)
        out = out.transpose(0, 1) if batch_first else out
    return out, [state] if nstate == 1 else list(state)


def assert_like_oracle(out: torch.Tensor, state: list[torch.Tensor], lengths: list[int],
                       inits: list[list[list[torch.Tensor]]],
                       oracle: Callable[[int, list[list[torch.Tensor]]], tuple[Any, Any]],
                       wrt: list[torch.Tensor], tol: float, allow_unused: bool = False) -> None:
    """Sequence b's outputs and final states against ``oracle(b, inits[b])`` -> (y (L_b, D·H),
    finals[k][s]); padding stays zero; then the gradients of one random loss on both sides with
    respect to ``wrt``. With ``allow_unused`` an input the oracle does not reach must get no
    (or a zero) gradient from the module."""
    gen = torch.Generator().manual_seed(1)
    LD, nstate, H = state[0].shape[0], len(state), state[0].shape[-1]
    loss, loss_ref = 0.0, 0.0
    for b, L in enumerate(lengths):
        y_ref, finals = oracle(b, inits[b])
        torch.testing.assert_close(out[:L, b], y_ref, atol=tol, rtol=tol)
        assert not out[L:, b].any()  # padding stays zero
        for k in range(LD):
            for s in range(nstate):
                torch.testing.assert_close(state[s][k, b], finals[k][s], atol=tol, rtol=tol)
        w_out = torch.randn(y_ref.shape, generator=gen, dtype=y_ref.dtype)
        w_st = torch.randn((LD, nstate, H), generator=gen, dtype=y_ref.dtype)
        loss = loss + (out[:L, b] * w_out).sum() + sum(
            (state[s][k, b] * w_st[k, s]).sum() for k in range(LD) for s in range(nstate))
        loss_ref = loss_ref + (y_ref * w_out).sum() + sum(
            (finals[k][s] * w_st[k, s]).sum() for k in range(LD) for s in range(nstate))
    grads = torch.autograd.grad(loss, wrt, allow_unused=allow_unused)
    grads_ref = torch.autograd.grad(loss_ref, wrt, allow_unused=allow_unused)
    for g, g_ref in zip(grads, grads_ref):
        if g_ref is None:
            assert g is None or not g.any()
            continue
        g = torch.zeros_like(g_ref) if g is None else g
        torch.testing.assert_close(g, g_ref, atol=tol, rtol=tol)
