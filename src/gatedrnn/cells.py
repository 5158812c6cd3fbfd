"""The equations: one function per cell step, in plain torch ops.

This is the single home of the math. Every fast path (``gatedrnn.kernels``) is tested against these
functions, and every other docstring points here. σ is the logistic sigmoid, ⊙ the elementwise
product, LN a layer norm over the last dimension with its own gain and bias.

Shapes (one step, batch B): x (B, I); h (B, H_out) where H_out = proj_size or H; c (B, H).
Weights follow ``torch.nn``: rows of ``w_ih`` (G·H, I) and ``w_hh`` (G·H, H_out) are stacked per
gate, in the order i|f|g|o for the LSTM (G = 4), r|z|n for the GRU (G = 3), and one block for the
Elman RNN (G = 1).

Each step returns ``(new_state, gates)``: the new state as a tuple, and a dict of the activated
gates (for gate recording; the dict is built anyway because it costs nothing here).

Example:
    >>> import torch
    >>> from gatedrnn.cells import CellOptions, lstm_cell
    >>> H, I = 3, 2
    >>> w = {"w_ih": torch.randn(4 * H, I), "w_hh": torch.randn(4 * H, H)}
    >>> (h, c), gates = lstm_cell(torch.randn(5, I), (torch.zeros(5, H), torch.zeros(5, H)), w,
    ...                           CellOptions("lstm"))
    >>> h.shape, sorted(gates)
    (torch.Size([5, 3]), ['candidate', 'cell', 'forget', 'input', 'output'])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

MODES = ("lstm", "gru", "rnn_tanh", "rnn_relu")
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
GATE_NAMES = {
    "lstm": ("input", "forget", "candidate", "output", "cell"),
    "gru": ("reset", "update", "candidate"),
    "rnn_tanh": (),
    "rnn_relu": (),
}


@dataclass(frozen=True)
class CellOptions:
    """What a cell step needs to know beyond its weights.

    mode: "lstm" | "gru" | "rnn_tanh" | "rnn_relu".
    reset_after: GRU form; True is torch/cuDNN's, False is Cho et al. 2014.
    layer_norm, ln_eps: Ba et al. 2016 layer normalisation (see each cell).
    zoneout, zoneout_cell: Krueger et al. 2016 probabilities (the masks themselves are passed per
        step; the probabilities are kept here for the evaluation-mode expectation).
    training: whether masks are random (training) or expectations (evaluation).
    """

    mode: str = "lstm"
    reset_after: bool = True
    layer_norm: bool = False
    ln_eps: float = 1e-5
    zoneout: float = 0.0
    zoneout_cell: float = 0.0
    training: bool = False


Weights = Mapping[str, Tensor | None]


def _ln(v: Tensor, w: Weights, which: str, eps: float) -> Tensor:
    """LN(v) = gain ⊙ (v − mean(v)) / sqrt(var(v) + eps) + bias, over the last dimension."""
    return F.layer_norm(v, (v.shape[-1],), w[f"ln_{which}_w"], w[f"ln_{which}_b"], eps)


def _add(v: Tensor, b: Tensor | None) -> Tensor:
    return v if b is None else v + b


def _zoneout(old: Tensor, new: Tensor, keep: Tensor | None) -> Tensor:
    """Zoneout: state' = d ⊙ old + (1 − d) ⊙ new, with d a 0/1 mask (training) or p (evaluation)."""
    if keep is None:
        return new
    return keep * old + (1 - keep) * new


def lstm_cell(
    x: Tensor,
    state: tuple[Tensor, Tensor],
    w: Weights,
    opts: CellOptions,
    recurrent_mask: Tensor | None = None,
    zoneout_h: Tensor | None = None,
    zoneout_c: Tensor | None = None,
) -> tuple[tuple[Tensor, Tensor], dict[str, Tensor]]:
    """One LSTM step (Hochreiter & Schmidhuber 1997, forget gate of Gers et al. 2000)::

        a = W_ih x + b_ih + W_hh (m ⊙ h) + b_hh          (B, 4H); m is the recurrent dropout mask
          with layer_norm: a = LN_x(W_ih x) + LN_h(W_hh (m ⊙ h)) + b_ih + b_hh
        i = σ(a_i + P_i ⊙ c)        input gate      (P: peepholes, Gers & Schmidhuber 2000)
        f = σ(a_f + P_f ⊙ c)        forget gate
        g = tanh(a_g)               candidate
        c' = f ⊙ c + i ⊙ g          cell
        o = σ(a_o + P_o ⊙ c')       output gate (peeks at the new cell)
        h' = o ⊙ tanh(c')           with layer_norm: o ⊙ tanh(LN_c(c'))
        h' = W_hr h'                with a projection (proj_size > 0)
        zoneout: h' = d_h ⊙ h + (1 − d_h) ⊙ h',  c' = d_c ⊙ c + (1 − d_c) ⊙ c'

    Shapes: x (B, I), h (B, H_out), c (B, H); returns ((h', c'), gates) with gates i, f, g, o and
    the carried cell c', each (B, H).
    """
    h, c = state
    h_in = h if recurrent_mask is None else h * recurrent_mask
    x_part = x @ w["w_ih"].T  # (B, 4H)
    h_part = h_in @ w["w_hh"].T  # (B, 4H)
    if opts.layer_norm:
        x_part = _ln(x_part, w, "x", opts.ln_eps)
        h_part = _ln(h_part, w, "h", opts.ln_eps)
    a = _add(_add(x_part + h_part, w.get("b_ih")), w.get("b_hh"))
    a_i, a_f, a_g, a_o = a.chunk(4, dim=-1)  # each (B, H)
    peep = w.get("peephole")
    if peep is not None:
        a_i = a_i + peep[0] * c
        a_f = a_f + peep[1] * c
    input_gate = torch.sigmoid(a_i)
    forget_gate = torch.sigmoid(a_f)
    candidate = torch.tanh(a_g)
    cell = forget_gate * c + input_gate * candidate
    if peep is not None:
        a_o = a_o + peep[2] * cell
    output_gate = torch.sigmoid(a_o)
    shown = _ln(cell, w, "c", opts.ln_eps) if opts.layer_norm else cell
    h_new = output_gate * torch.tanh(shown)  # (B, H)
    w_hr = w.get("w_hr")
    if w_hr is not None:
        h_new = h_new @ w_hr.T  # (B, H_out)
    h_new = _zoneout(h, h_new, zoneout_h)
    cell = _zoneout(c, cell, zoneout_c)
    gates = {"input": input_gate, "forget": forget_gate, "candidate": candidate,
             "output": output_gate, "cell": cell}
    return (h_new, cell), gates


def gru_cell(
    x: Tensor,
    state: tuple[Tensor],
    w: Weights,
    opts: CellOptions,
    recurrent_mask: Tensor | None = None,
    zoneout_h: Tensor | None = None,
    zoneout_c: Tensor | None = None,
) -> tuple[tuple[Tensor], dict[str, Tensor]]:
    """One GRU step (Cho et al. 2014), in either of its two published forms::

        u = W_ih x + b_ih                       (B, 3H); with layer_norm LN_x(W_ih x) + b_ih
        reset_after=True (torch.nn, cuDNN, Keras' default):
            v = W_hh (m ⊙ h) + b_hh             (B, 3H); with layer_norm LN_h(W_hh (m ⊙ h)) + b_hh
            r = σ(u_r + v_r)                    reset gate
            z = σ(u_z + v_z)                    update gate
            n = tanh(u_n + r ⊙ v_n)             candidate
        reset_after=False (Cho et al. 2014, Keras reset_after=False):
            r = σ(u_r + W_hr (m ⊙ h) + b_hr),  z = σ(u_z + W_hz (m ⊙ h) + b_hz)
            n = tanh(u_n + W_hn (r ⊙ (m ⊙ h)) + b_hn)
        h' = (1 − z) ⊙ n + z ⊙ h
        zoneout: h' = d ⊙ h + (1 − d) ⊙ h'

    m is the recurrent dropout mask (ones when off). Shapes: x (B, I), h (B, H); returns ((h',),
    gates) with gates r, z, n each (B, H). layer_norm needs reset_after=True (the modules check).
    """
    (h,) = state
    h_in = h if recurrent_mask is None else h * recurrent_mask
    u = x @ w["w_ih"].T  # (B, 3H)
    if opts.layer_norm:
        u = _ln(u, w, "x", opts.ln_eps)
    u = _add(u, w.get("b_ih"))
    u_r, u_z, u_n = u.chunk(3, dim=-1)
    w_hh, b_hh = w["w_hh"], w.get("b_hh")
    if opts.reset_after:
        v = h_in @ w_hh.T  # (B, 3H)
        if opts.layer_norm:
            v = _ln(v, w, "h", opts.ln_eps)
        v_r, v_z, v_n = _add(v, b_hh).chunk(3, dim=-1)
        reset_gate = torch.sigmoid(u_r + v_r)
        update_gate = torch.sigmoid(u_z + v_z)
        candidate = torch.tanh(u_n + reset_gate * v_n)
    else:
        H = h.shape[-1]
        b_rz, b_n = (None, None) if b_hh is None else (b_hh[: 2 * H], b_hh[2 * H :])
        v_r, v_z = _add(h_in @ w_hh[: 2 * H].T, b_rz).chunk(2, dim=-1)
        reset_gate = torch.sigmoid(u_r + v_r)
        update_gate = torch.sigmoid(u_z + v_z)
        candidate = torch.tanh(u_n + _add((reset_gate * h_in) @ w_hh[2 * H :].T, b_n))
    h_new = (1 - update_gate) * candidate + update_gate * h
    h_new = _zoneout(h, h_new, zoneout_h)
    return (h_new,), {"reset": reset_gate, "update": update_gate, "candidate": candidate}


def rnn_cell(
    x: Tensor,
    state: tuple[Tensor],
    w: Weights,
    opts: CellOptions,
    recurrent_mask: Tensor | None = None,
    zoneout_h: Tensor | None = None,
    zoneout_c: Tensor | None = None,
) -> tuple[tuple[Tensor], dict[str, Tensor]]:
    """One Elman RNN step, the ungated baseline::

        h' = φ(W_ih x + b_ih + W_hh (m ⊙ h) + b_hh),   φ = tanh (mode "rnn_tanh") or relu
        zoneout: h' = d ⊙ h + (1 − d) ⊙ h'

    Shapes: x (B, I), h (B, H); returns ((h',), {}).
    """
    (h,) = state
    h_in = h if recurrent_mask is None else h * recurrent_mask
    a = _add(_add(x @ w["w_ih"].T + h_in @ w["w_hh"].T, w.get("b_ih")), w.get("b_hh"))
    h_new = torch.tanh(a) if opts.mode == "rnn_tanh" else torch.relu(a)
    return (_zoneout(h, h_new, zoneout_h),), {}


STEPS = {"lstm": lstm_cell, "gru": gru_cell, "rnn_tanh": rnn_cell, "rnn_relu": rnn_cell}
