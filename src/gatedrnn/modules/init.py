"""Initialisation schemes beyond torch.nn's default U(−1/√H, 1/√H).

- ``forget_bias=b`` (Gers et al. 2000; Jozefowicz et al. 2015 recommend 1.0): the forget gate's
  total bias b_ih + b_hh starts at b. We put b in b_ih and 0 in b_hh.
- ``init="orthogonal"``: orthogonal W_hh per gate block (Saxe et al. 2014), Xavier-uniform W_ih,
  zero biases. A head-wise W_hh (num_heads, G·d, d) is orthogonal per head and gate (d, d).
- ``init="chrono"`` (Tallec & Ollivier 2018): b_f ~ log U(1, T_max − 1) and b_i = −b_f, so that the
  forget gate's time constants spread over [1, T_max]. For the GRU the update gate z plays the role
  of the forget gate (h' = (1 − z) n + z h), so b_z gets the log U draw.

Example:
    >>> import torch, gatedrnn
    >>> m = gatedrnn.LSTM(4, 8, forget_bias=1.0)
    >>> float((m.bias_ih_l0 + m.bias_hh_l0)[8:16].mean().detach())
    1.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

# Where the "keep the past" gate sits in the stacked gate rows, per cell.
FORGET_BLOCK = {"lstm": 1, "gru": 1}
INPUT_BLOCK = {"lstm": 0}


@torch.no_grad()
def set_gate_bias(b_ih: Tensor, b_hh: Tensor, block: int, hidden: int, total: Tensor) -> None:
    """Make b_ih + b_hh equal ``total`` on one gate block (b_hh's part set to zero)."""
    rows = slice(block * hidden, (block + 1) * hidden)
    b_ih[rows] = total
    b_hh[rows] = 0.0


@torch.no_grad()
def orthogonal_(w_ih: Tensor, w_hh: Tensor, gates: int, biases: Sequence[Tensor]) -> None:
    """Orthogonal recurrent blocks, Xavier-uniform input weights, zero biases.

    w_hh is (G·H, H_out), one block per gate, or head-wise (nh, G·d, d), one block per head and
    gate."""
    hidden = w_ih.shape[0] // gates
    heads = w_hh.unsqueeze(0) if w_hh.dim() == 2 else w_hh  # (nh, G·rows, cols)
    rows = heads.shape[1] // gates
    for g in range(gates):
        for head in heads:
            torch.nn.init.orthogonal_(head[g * rows:(g + 1) * rows])
        torch.nn.init.xavier_uniform_(w_ih[g * hidden:(g + 1) * hidden])
    for b in biases:
        b.zero_()


def chrono_bias(hidden: int, max_len: int, like: Tensor) -> Tensor:
    """b_f ~ log U(1, T_max − 1), shape (hidden,)."""
    if max_len < 3:
        raise ValueError(f"chrono_max_len must be at least 3, got {max_len}")
    u = like.new_empty(hidden).uniform_(1.0, float(max_len - 1))
    return torch.log(u)


def default_uniform_(params: list[Tensor], hidden: int) -> None:
    """torch.nn's default: every parameter U(−1/√H, 1/√H), in registration order."""
    stdv = 1.0 / math.sqrt(hidden) if hidden > 0 else 0.0  # torch.nn's cells accept H = 0
    with torch.no_grad():
        for p in params:
            p.uniform_(-stdv, stdv)


def variant_defaults_(named: list[tuple[str, Tensor]], hidden: int) -> None:
    """Layer-norm gains 1 and biases 0 (Ba et al. 2016); peepholes like every torch.nn weight."""
    with torch.no_grad():
        for name, p in named:
            if name.startswith("layer_norm_"):
                p.fill_(1.0 if "_weight" in name else 0.0)
            elif name.startswith("weight_peephole"):
                default_uniform_([p], hidden)


def apply_scheme_(mode: str, w_ih: Tensor, w_hh: Tensor, biases: Sequence[Tensor], hidden: int,
                  scheme: str, forget_bias: float | None, chrono_max_len: int | None) -> None:
    """``init`` and ``forget_bias`` of one layer and direction, on top of the default init.

    ``biases`` is [b_ih, b_hh] or empty (bias=False: only the weights change).
    """
    if hidden <= 0:
        return  # (torch.nn's cells accept hidden_size 0: nothing to initialise)
    gates = w_ih.shape[0] // hidden  # (w_ih is (G·H, I) in every layout; w_hh may be head-wise)
    if scheme == "orthogonal":
        orthogonal_(w_ih, w_hh, gates, biases)
    if not biases or mode not in FORGET_BLOCK:
        return
    b_ih, b_hh = biases
    if scheme == "chrono":
        assert chrono_max_len is not None  # checks.check_options requires it with init="chrono"
        b_f = chrono_bias(hidden, chrono_max_len, b_ih)
        set_gate_bias(b_ih, b_hh, FORGET_BLOCK[mode], hidden, b_f)
        if mode in INPUT_BLOCK:
            set_gate_bias(b_ih, b_hh, INPUT_BLOCK[mode], hidden, -b_f)
    elif forget_bias is not None:
        set_gate_bias(b_ih, b_hh, FORGET_BLOCK[mode], hidden, torch.tensor(float(forget_bias)))
