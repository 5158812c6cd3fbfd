"""Shared by the Triton engine's tests: build a call, run it on two engines, compare everything.

Importing this module switches Triton's interpreter on (before triton is imported), so the
kernels run on CPU tensors.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

from gatedrnn.equations.cells import CellOptions  # noqa: E402


def weights(mode: str, I: int, H: int, *, heads: int = 1, bias: bool = True, peephole: bool = False,
            layer_norm: bool = False, dtype: torch.dtype = torch.float32, seed: int = 0) -> dict:
    """A weight dict of one layer and direction, every entry requiring grad."""
    g = torch.Generator().manual_seed(seed)
    G = {"lstm": 4, "gru": 3, "slstm": 4, "mingru": 2, "minlstm": 3}[mode]

    def r(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * 0.6).to(dtype)

    w: dict = {"w_ih": r(G * H, I)}
    if mode not in ("mingru", "minlstm"):
        w["w_hh"] = r(heads, G * H // heads, H // heads) if heads > 1 else r(G * H, H)
    w["b_ih"] = r(G * H) if bias else None
    if mode not in ("mingru", "minlstm"):
        w["b_hh"] = r(G * H) if bias else None
    if peephole:
        w["peephole"] = r(3, H)
    if layer_norm:
        for k, n in (("x", G * H), ("h", G * H)) + ((("c", H),) if mode == "lstm" else ()):
            w[f"ln_{k}_w"] = 1 + r(n)
            w[f"ln_{k}_b"] = r(n)
    return {k: None if v is None else v.requires_grad_() for k, v in w.items()}


def case(mode: str, T: int, B: int, I: int, H: int, *, packed: bool, dtype=torch.float32,
         seed: int = 0):
    """(x, state, batch_sizes) with random initial states (all requiring grad)."""
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(T, B, I, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    n_state = {"lstm": 2, "slstm": 4}.get(mode, 1)
    state = tuple((torch.randn(B, H, generator=g, dtype=torch.float64) * 0.5).to(dtype)
                  .requires_grad_() for _ in range(n_state))
    if mode == "slstm":  # n > 0 and a finite m, as a run of the cell leaves them
        state = (state[0], state[1], (state[2].detach().abs() + 1).requires_grad_(), state[3])
    sizes = None
    if packed and B > 1:
        lengths = sorted(torch.randint(1, T + 1, (B,), generator=g).tolist(), reverse=True)
        lengths[0] = T
        sizes = torch.tensor([sum(1 for n in lengths if n > t) for t in range(T)])
    return x, state, sizes


def masks(opts: CellOptions, T: int, B: int, H: int, recurrent: bool, seed: int = 0) -> dict:
    """Recurrent dropout and zoneout masks drawn as ``stack.draw_masks`` does."""
    g = torch.Generator().manual_seed(seed + 2)
    out: dict = {}
    if recurrent:
        out["recurrent"] = torch.bernoulli(torch.full((B, H), 0.7), generator=g) / 0.7
    for key, p in (("zoneout_h", opts.zoneout), ("zoneout_c", opts.zoneout_cell)):
        if p > 0:
            out[key] = (torch.bernoulli(torch.full((T, B, H), p), generator=g) if opts.training
                        else torch.tensor(p))
    return out


def outputs_and_grads(run, x, state, w, sizes, reverse, opts, masks, seed: int = 3):
    """Outputs, final states, recorded gates and the gradients of a random loss with respect to
    x, every state and every weight."""
    y, final, gates = run(x, state, w, sizes, reverse, opts, masks, True)
    g = torch.Generator().manual_seed(seed)
    loss = (y * torch.randn(y.shape, generator=g, dtype=y.dtype)).sum()
    for s in final:
        loss = loss + (s * torch.randn(s.shape, generator=g, dtype=s.dtype)).sum()
    leaves = [x, *state, *(v for v in w.values() if v is not None)]
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return y, final, gates, grads


def assert_same(a, b, atol: float = 2e-5, rtol: float = 1e-4) -> None:
    """Every output, state, gate and gradient of two ``outputs_and_grads`` results agree."""
    ya, fa, ga, da = a
    yb, fb, gb, db = b
    torch.testing.assert_close(yb, ya, atol=atol, rtol=rtol)
    for s, t in zip(fb, fa):
        torch.testing.assert_close(s, t, atol=atol, rtol=rtol)
    if ga:
        assert gb is not None and set(gb) == set(ga)
        for k in ga:
            torch.testing.assert_close(gb[k], ga[k].detach(), atol=atol, rtol=rtol, msg=k)
    for i, (p, q) in enumerate(zip(db, da)):
        if q is None:
            assert p is None or not p.abs().any(), i
        else:
            torch.testing.assert_close(p, q, atol=atol, rtol=rtol, msg=f"gradient {i}")
