"""The log-space parallel scan for minGRU and minLSTM (Feng et al. 2024), in torch ops.

Both cells are a linear recurrence h_t = a_t ⊙ h_{t−1} + b_t whose coefficients depend on x only
(minGRU: a = 1 − z, b = z ⊙ h̃; minLSTM: a = f', b = i' ⊙ h̃; equations in ``gatedrnn.equations.cells``).
Unrolled, with a*_t = Σ_{s≤t} log a_s,

    h_t = exp(a*_t) ⊙ h_0 + exp(a*_t + logcumsumexp_{k≤t}(log b_k − a*_k))

which is a cumsum and a logcumsumexp over time: O(log T) depth on a device with many cores. b > 0
(z, i' > 0 and g > 0), so log b exists; h_0 may have any sign, so its term stays in linear space.

On a CPU the sequential fused scan (``kernels.minrnn``) is both faster and more accurate: the
cancellation in a*_t + logcumsumexp(…) grows with |a*_t| (measured on the prototype at T = 1000,
float32: 2.2e-4 relative error against 4.1e-6). This engine is for other devices and for checking.

Variable lengths: each row's steps are first reversed in place (``reverse``) or left as they are,
so that every row runs over t < length from t = 0; steps past a row's end are computed and then
dropped (zeroed outputs, the final state gathered at length − 1).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from .cells import MIN_GATES, CellOptions, required


def _log_positive(v: Tensor) -> Tensor:
    """log g(v): log(v + 0.5) for v ≥ 0, log σ(v) otherwise (both branches finite, so the
    gradient of ``where`` has no NaN)."""
    return torch.where(v >= 0, torch.log(F.relu(v) + 0.5), F.logsigmoid(v))


def log_coefficients(kind: str, a: Tensor) -> tuple[Tensor, Tensor]:
    """(log a_t, log b_t) of the recurrence from the projection a = W_ih x + b_ih (…, G·H)."""
    if kind == "mingru":
        a_z, a_h = a.chunk(2, dim=-1)
        return F.logsigmoid(-a_z), F.logsigmoid(a_z) + _log_positive(a_h)
    a_f, a_i, a_h = a.chunk(3, dim=-1)
    log_f, log_i = F.logsigmoid(a_f), F.logsigmoid(a_i)
    log_total = torch.logaddexp(log_f, log_i)
    return log_f - log_total, log_i - log_total + _log_positive(a_h)


def scan(log_a: Tensor, log_b: Tensor, h0: Tensor) -> Tensor:
    """All states of h_t = a_t ⊙ h_{t−1} + b_t, t = 0 … T−1, from log a, log b (T, B, H) and
    h0 (B, H); returns (T, B, H)."""
    a_star = torch.cumsum(log_a, dim=0)  # (T, B, H)
    return torch.exp(a_star) * h0 + torch.exp(a_star + torch.logcumsumexp(log_b - a_star, dim=0))


def _row_order(lengths: Tensor, T: int) -> Tensor:
    """(T, B) time index that reverses each row's first ``length`` steps and keeps the rest (its
    own inverse)."""
    t = torch.arange(T)[:, None]
    return torch.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)


def run(
    x: Tensor,
    state: tuple[Tensor],
    w: Mapping[str, Tensor | None],
    batch_sizes: Tensor | None,
    reverse: bool,
    opts: CellOptions,
    masks: Mapping[str, Tensor | None],
    record: bool,
) -> tuple[Tensor, tuple[Tensor], dict[str, Tensor] | None]:
    """One direction of one minGRU/minLSTM layer as a log-space scan; the engine contract of
    ``gatedrnn.equations.reference.run`` (``opts.mode`` "mingru" or "minlstm"; no masks). Shapes:
    x (T, B, I), state (h0 (B, H),); returns y (T, B, H), (h_n,), and the gates each (T, B, H)
    when ``record``."""
    (h0,) = state
    kind = opts.mode
    T, B = x.shape[0], x.shape[1]
    a = x @ required(w, "w_ih").T  # (T, B, G·H)
    b_ih = w.get("b_ih")
    if b_ih is not None:
        a = a + b_ih
    GH = a.shape[-1]
    lengths = torch.full((B,), T, dtype=torch.long)
    if batch_sizes is not None:
        lengths = (batch_sizes[:, None] > torch.arange(B)[None, :]).sum(0)  # (B,)
    lengths = lengths.to(x.device)
    order = _row_order(lengths, T).to(x.device) if reverse else None
    if order is not None:
        a = a.gather(0, order[..., None].expand(T, B, GH))
    h = scan(*log_coefficients(kind, a), h0)  # (T, B, H)
    H = h.shape[-1]
    live = (torch.arange(T, device=x.device)[:, None] < lengths[None, :])[..., None]  # (T, B, 1)
    h_n = h.gather(0, (lengths - 1)[None, :, None].expand(1, B, H))[0]
    y = torch.where(live, h, 0.0)
    gates = None
    if record:
        gates = {k: torch.where(live, v, 0.0) for k, v in MIN_GATES[kind](a).items()}
    if order is not None:
        y = y.gather(0, order[..., None].expand(T, B, H))
        if gates is not None:
            gates = {k: v.gather(0, order[..., None].expand(T, B, H)) for k, v in gates.items()}
    return y, (h_n,), gates
