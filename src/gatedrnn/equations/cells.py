"""The equations: one function per cell step, in plain torch ops.

This is the single home of the math. Every fast path (``gatedrnn.engines.kernels``) is tested against these
functions, and every other docstring points here. σ is the logistic sigmoid, ⊙ the elementwise
product, LN a layer norm over the last dimension with its own gain and bias.

Shapes (one step, batch B): x (B, I); h (B, H_out) where H_out = proj_size or H; c (B, H).
Weights follow ``torch.nn``: rows of ``w_ih`` (G·H, I) and ``w_hh`` (G·H, H_out) are stacked per
gate, in the order i|f|g|o for the LSTM (G = 4), r|z|n for the GRU (G = 3), and one block for the
Elman RNN (G = 1). The LSTM and GRU also take a head-wise ``w_hh`` (num_heads, G·d, d), d = H /
num_heads (``headwise_product``): the modules' ``num_heads``.

Each step returns ``(new_state, gates)``: the new state as a tuple, and a dict of the activated
gates (for gate recording; the dict is built anyway because it costs nothing here).

Example:
    >>> import torch
    >>> from gatedrnn.equations.cells import CellOptions, lstm_cell
    >>> H, I = 3, 2
    >>> w = {"w_ih": torch.randn(4 * H, I), "w_hh": torch.randn(4 * H, H)}
    >>> (h, c), gates = lstm_cell(torch.randn(5, I), (torch.zeros(5, H), torch.zeros(5, H)), w,
    ...                           CellOptions("lstm"))
    >>> h.shape, sorted(gates)
    (torch.Size([5, 3]), ['candidate', 'cell', 'forget', 'input', 'output'])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

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
# A cell step: (x, state, w, ...) -> (new_state, gates).
Step = Callable[..., tuple[tuple[Tensor, ...], dict[str, Tensor]]]


def required(w: Weights, name: str) -> Tensor:
    """``w[name]`` for a weight the cell and its options imply (w_ih; w_hh but in minGRU and
    minLSTM; the layer norm's with layer_norm). Weights allows None for the entries that may be
    absent (biases, projection, peepholes), so this one is typed as present."""
    return cast(Tensor, w[name])


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

        a = W_ih x + b_ih + W_hh (m ⊙ h) + b_hh          (B, 4H); m is the recurrent dropout mask,
          W_hh (m ⊙ h) dense or head-wise (``headwise_product``)
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
    x_part = x @ required(w, "w_ih").T  # (B, 4H)
    h_part = headwise_product(h_in, required(w, "w_hh"))  # (B, 4H)
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

    m is the recurrent dropout mask (ones when off). Every product with W_hh (or its rows of one
    gate, W_hr, W_hz, W_hn) is dense or head-wise (``headwise_product``). Shapes: x (B, I), h (B, H),
    w_hh (3H, H) or (num_heads, 3d, d); returns ((h',), gates) with gates r, z, n each (B, H).
    layer_norm needs reset_after=True (the modules check).
    """
    (h,) = state
    h_in = h if recurrent_mask is None else h * recurrent_mask
    u = x @ required(w, "w_ih").T  # (B, 3H)
    if opts.layer_norm:
        u = _ln(u, w, "x", opts.ln_eps)
    u = _add(u, w.get("b_ih"))
    u_r, u_z, u_n = u.chunk(3, dim=-1)
    w_hh, b_hh = required(w, "w_hh"), w.get("b_hh")
    if opts.reset_after:
        v = headwise_product(h_in, w_hh)  # (B, 3H)
        if opts.layer_norm:
            v = _ln(v, w, "h", opts.ln_eps)
        v_r, v_z, v_n = _add(v, b_hh).chunk(3, dim=-1)
        reset_gate = torch.sigmoid(u_r + v_r)
        update_gate = torch.sigmoid(u_z + v_z)
        candidate = torch.tanh(u_n + reset_gate * v_n)
    else:
        H = h.shape[-1]
        b_rz, b_n = (None, None) if b_hh is None else (b_hh[: 2 * H], b_hh[2 * H :])
        v_r, v_z = _add(headwise_product(h_in, gate_rows(w_hh, 0, 2)), b_rz).chunk(2, dim=-1)
        reset_gate = torch.sigmoid(u_r + v_r)
        update_gate = torch.sigmoid(u_z + v_z)
        v_n = headwise_product(reset_gate * h_in, gate_rows(w_hh, 2, 3))
        candidate = torch.tanh(u_n + _add(v_n, b_n))
    h_new = (1 - update_gate) * candidate + update_gate * h
    h_new = _zoneout(h, h_new, zoneout_h)
    return (h_new,), {"reset": reset_gate, "update": update_gate, "candidate": candidate}


def gate_rows(w_hh: Tensor, lo: int, hi: int) -> Tensor:
    """The rows of gates lo … hi − 1 of a W_hh, dense (G·H, H) or head-wise (num_heads, G·d, d):
    both are stacked per gate in blocks as wide as their last dimension (a GRU has no projection)."""
    n = w_hh.shape[-1]
    return w_hh[..., lo * n:hi * n, :]


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
    a = _add(_add(x @ required(w, "w_ih").T + h_in @ required(w, "w_hh").T, w.get("b_ih")),
             w.get("b_hh"))
    h_new = torch.tanh(a) if opts.mode == "rnn_tanh" else torch.relu(a)
    return (_zoneout(h, h_new, zoneout_h),), {}


STEPS: dict[str, Step] = {"lstm": lstm_cell, "gru": gru_cell, "rnn_tanh": rnn_cell, "rnn_relu": rnn_cell}


# --- minGRU, minLSTM and sLSTM ------------------------------------------------------------------
# Their weights carry only what they have: minGRU and minLSTM have no recurrent weight (their gates
# see x_t alone, which is what lets training run as a scan); sLSTM's recurrent weight may be split
# into heads. Rows of w_ih are stacked per gate: z|h̃ (minGRU), f|i|h̃ (minLSTM), i|f|z|o (sLSTM).
# Gates, state and engines of every cell are declared in ``kinds``.


def positive(v: Tensor) -> Tensor:
    """g(v) = v + 0.5 for v ≥ 0 and σ(v) otherwise: Feng et al.'s positive, continuous activation
    for the candidate state (it keeps h > 0, which their log-space scan needs)."""
    return torch.where(v >= 0, v + 0.5, torch.sigmoid(v))


def mingru_cell(x: Tensor, state: tuple[Tensor], w: Weights) -> tuple[tuple[Tensor], dict[str, Tensor]]:
    """One minGRU step (Feng et al. 2024, "Were RNNs All We Needed?")::

        [a_z | a_h] = W_ih x + b_ih               (B, 2H)
        z  = σ(a_z)                               update gate
        h̃ = g(a_h)                               candidate (``positive``)
        h' = (1 − z) ⊙ h + z ⊙ h̃

    Shapes: x (B, I), h (B, H), w_ih (2H, I), b_ih (2H,) or None; returns ((h',), gates).
    """
    (h,) = state
    gates = mingru_gates(_add(x @ required(w, "w_ih").T, w.get("b_ih")))
    update_gate, candidate = gates["update"], gates["candidate"]
    h_new = (1 - update_gate) * h + update_gate * candidate
    return (h_new,), gates


def mingru_gates(a: Tensor) -> dict[str, Tensor]:
    """minGRU's gates from its projection a = W_ih x + b_ih (…, 2H): z = σ(a_z), h̃ = g(a_h).
    (The gates depend on x alone, so the engines compute them for all steps at once.)"""
    a_z, a_h = a.chunk(2, dim=-1)  # each (…, H)
    return {"update": torch.sigmoid(a_z), "candidate": positive(a_h)}


def minlstm_cell(x: Tensor, state: tuple[Tensor], w: Weights) -> tuple[tuple[Tensor], dict[str, Tensor]]:
    """One minLSTM step (Feng et al. 2024), with the normalised gates that make it
    time-independent in scale::

        [a_f | a_i | a_h] = W_ih x + b_ih         (B, 3H)
        f = σ(a_f),  i = σ(a_i),  h̃ = g(a_h)     (g: ``positive``)
        f' = f / (f + i),  i' = i / (f + i)
        h' = f' ⊙ h + i' ⊙ h̃

    Shapes: x (B, I), h (B, H), w_ih (3H, I), b_ih (3H,) or None; returns ((h',), gates) with the
    normalised f', i' recorded as "forget" and "input".
    """
    (h,) = state
    gates = minlstm_gates(_add(x @ required(w, "w_ih").T, w.get("b_ih")))
    h_new = gates["forget"] * h + gates["input"] * gates["candidate"]
    return (h_new,), gates


def minlstm_gates(a: Tensor) -> dict[str, Tensor]:
    """minLSTM's gates from its projection a = W_ih x + b_ih (…, 3H): the normalised f', i' and
    h̃ = g(a_h)."""
    a_f, a_i, a_h = a.chunk(3, dim=-1)  # each (…, H)
    forget_gate, input_gate = torch.sigmoid(a_f), torch.sigmoid(a_i)
    total = forget_gate + input_gate
    return {"forget": forget_gate / total, "input": input_gate / total, "candidate": positive(a_h)}


def headwise_product(h: Tensor, w_hh: Tensor) -> Tensor:
    """The recurrent product R h for dense or head-wise (block-diagonal) recurrence.

    w_hh (G·H, H) is torch.nn's dense layout. w_hh (num_heads, G·d, d), d = H / num_heads, is the
    head-wise one: head j maps h[:, j·d:(j+1)·d] to the gates of units j·d … (j+1)·d − 1, its rows
    stacked per gate. Either way the result is (B, G·H) in the dense gate-major layout
    [gate 0 (H) | gate 1 (H) | …], so everything after the product is the same.
    """
    if w_hh.dim() == 2:
        return h @ w_hh.T  # (B, G·H)
    nh, Gd, d = w_hh.shape
    if torch.compiler.is_exporting():
        # Inside an exported scan, any op on h that records its shape puts the symbolic batch
        # size among the body's saved values, and torch 2.13's ONNX exporter then fails to
        # decompose the scan ("'SymInt' object has no attribute 'unsqueeze'"). So the heads are
        # laid out as the equal dense block-diagonal (G·H, H), from the weight alone, and h meets
        # one product as in the dense case: zero blocks add exact zeros.
        G, eye = Gd // d, torch.eye(nh, dtype=w_hh.dtype, device=w_hh.device)
        # dense[g, j, e, k, f] = w_hh[j, g·d + e, f] if j = k else 0: row g·H + j·d + e, column k·d + f
        dense = torch.einsum("jgef,jk->gjekf", w_hh.reshape(nh, G, d, d), eye)
        return h @ dense.reshape(G * nh * d, nh * d).T
    per_head = torch.einsum("bnd,ned->bne", h.unflatten(-1, (nh, d)), w_hh)  # (B, nh, G·d)
    return per_head.unflatten(-1, (Gd // d, d)).transpose(-3, -2).flatten(-3)  # (B, G·H)


def slstm_cell(
    x: Tensor, state: tuple[Tensor, Tensor, Tensor, Tensor], w: Weights
) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor], dict[str, Tensor]]:
    """One sLSTM step (Beck et al. 2024, xLSTM): exponential input gate, stabiliser m, normaliser n::

        [ĩ | f̃ | z̃ | õ] = W_ih x + b_ih + R h + b_hh   (B, 4H); R h by ``headwise_product``
        m' = max(log σ(f̃) + m, ĩ)                       stabiliser
        i  = exp(ĩ − m')                                 input gate (stabilised)
        f  = exp(log σ(f̃) + m − m')                     forget gate (stabilised)
        c' = f ⊙ c + i ⊙ tanh(z̃)                        cell
        n' = f ⊙ n + i                                   normaliser
        h' = σ(õ) ⊙ c' / n'

    The state is (h, c, n, m), zeros by default. m cancels from h' (c' and n' share the factor
    exp(−m')), so it only keeps exp from overflowing. Shapes: x (B, I), each state (B, H),
    w_ih (4H, I), w_hh (4H, H) or (num_heads, 4d, d), biases (4H,) or None.
    """
    h, c, n, m = state
    a = _add(_add(x @ required(w, "w_ih").T + headwise_product(h, required(w, "w_hh")),
                  w.get("b_ih")), w.get("b_hh"))
    a_i, a_f, a_z, a_o = a.chunk(4, dim=-1)  # each (B, H)
    log_f = F.logsigmoid(a_f) + m
    stabilizer = torch.maximum(log_f, a_i)
    input_gate = torch.exp(a_i - stabilizer)
    forget_gate = torch.exp(log_f - stabilizer)
    candidate = torch.tanh(a_z)
    cell = forget_gate * c + input_gate * candidate
    normalizer = forget_gate * n + input_gate
    output_gate = torch.sigmoid(a_o)
    h_new = output_gate * cell / normalizer
    gates = {"input": input_gate, "forget": forget_gate, "candidate": candidate,
             "output": output_gate, "cell": cell, "normalizer": normalizer,
             "stabilizer": stabilizer}
    return (h_new, cell, normalizer, stabilizer), gates


MIN_GATES = {"mingru": mingru_gates, "minlstm": minlstm_gates}
