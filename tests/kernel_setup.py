"""What the fused-kernel tests (``test_kernel_lstm.py``, ``_gru``, ``_rnn``, ``_heads``) share: the
packed sizes of a list of lengths, the gradients of a random projection, and the pieces of each
file's ``_setup``: seeded random leaves, the variants' masks and layer-norm leaves, the options.

The pieces draw from one generator in the order the files always drew, so each test sees the
numbers it saw before.
"""

from __future__ import annotations

import torch

from gatedrnn.equations.cells import CellOptions


def sizes_of(lengths: list[int], T: int) -> torch.Tensor:
    """PackedSequence batch sizes of sequences with these lengths (sorted, longest first)."""
    return torch.tensor([sum(1 for n in lengths if n > t) for t in range(T)], dtype=torch.int64)


def random_grads(outs, leaves, seed: int = 0) -> list[torch.Tensor]:
    """Gradients of a random projection of ``outs``; zeros for leaves that do not take part."""
    g = torch.Generator().manual_seed(seed)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in outs)
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return [torch.zeros_like(v) if d is None else d for d, v in zip(grads, leaves)]


class Draw:
    """Seeded random leaves: ``draw(*shape, scale=...)`` is N(0, scale²), requiring grad."""

    def __init__(self, seed: int, dtype: torch.dtype, scale: float = 0.5) -> None:
        self.g, self.dtype, self.scale = torch.Generator().manual_seed(seed), dtype, scale

    def __call__(self, *shape: int, scale: float | None = None) -> torch.Tensor:
        s = self.scale if scale is None else scale
        return (torch.randn(shape, generator=self.g, dtype=self.dtype) * s).requires_grad_()

    def layer_norm(self, sizes: tuple[tuple[str, int], ...]) -> dict[str, torch.Tensor]:
        """Gains near 1 and biases near 0 for the normalised parts (name, size)."""
        out = {}
        for k, n in sizes:
            out[f"ln_{k}_w"] = (1 + self(n, scale=0.2)).detach().requires_grad_()
            out[f"ln_{k}_b"] = self(n, scale=0.2)
        return out

    def masks(self, variant: dict, T: int, B: int, h_size: int, c_size: int | None = None
              ) -> dict[str, torch.Tensor]:
        """The variant's recurrent-dropout and zoneout masks (zoneout_c only with a cell state
        of ``c_size``): keep 0.7 for dropout, zoneout 0.3 for h and 0.4 for c."""
        masks, dtype, g = {}, self.dtype, self.g
        if variant.get("recurrent"):
            masks["recurrent"] = torch.bernoulli(torch.full((B, h_size), 0.7, dtype=dtype),
                                                 generator=g) / 0.7
        zone = variant.get("zoneout")
        if zone == "train":
            masks["zoneout_h"] = torch.bernoulli(torch.full((T, B, h_size), 0.3, dtype=dtype),
                                                 generator=g)
            if c_size is not None:
                masks["zoneout_c"] = torch.bernoulli(torch.full((T, B, c_size), 0.4, dtype=dtype),
                                                     generator=g)
        elif zone == "eval":
            masks["zoneout_h"] = torch.tensor(0.3, dtype=dtype)
            if c_size is not None:
                masks["zoneout_c"] = torch.tensor(0.4, dtype=dtype)
        return masks


def options(mode: str, variant: dict, cell_state: bool = False) -> CellOptions:
    """The CellOptions of a variant: zoneout 0.3 (and 0.4 on c with ``cell_state``)."""
    zone = variant.get("zoneout")
    return CellOptions(mode, reset_after=variant.get("reset_after", True),
                       layer_norm=bool(variant.get("layer_norm")), zoneout=0.3 if zone else 0.0,
                       zoneout_cell=0.4 if zone and cell_state else 0.0, training=zone == "train")


def torch_rowwise(ref: torch.nn.Module, x: torch.Tensor, state: tuple[torch.Tensor, ...],
                  lengths: list[int], reverse: bool) -> tuple[torch.Tensor, ...]:
    """What one direction of a layer computes, through torch.nn's one-layer ``ref`` one row at a
    time (each row has its own length; ``reverse`` flips each row's own steps, as torch's reverse
    direction does for a packed input): (y, *final states), y zero past each row's length."""
    T = x.shape[0]
    ys: list[torch.Tensor] = []
    finals: list[list[torch.Tensor]] = [[] for _ in state]
    for b, n in enumerate(lengths):
        xb = x[:n, b:b + 1]
        xb = xb.flip(0) if reverse else xb
        s0 = tuple(s[None, b:b + 1] for s in state)
        yb, sb = ref(xb, s0 if len(s0) > 1 else s0[0])
        yb = yb.flip(0) if reverse else yb
        ys.append(torch.cat([yb, yb.new_zeros(T - n, 1, yb.shape[-1])]))
        for out, s in zip(finals, sb if isinstance(sb, tuple) else (sb,)):
            out.append(s[0])
    return (torch.cat(ys, 1), *(torch.cat(f) for f in finals))


def runner(names: list[str], state: tuple[str, ...], sizes: torch.Tensor | None, opts: CellOptions,
           masks: dict[str, torch.Tensor]):
    """``call(engine, *tensors, reverse, record)``: ``engine.run`` on leaves given in the order of
    ``names`` (the input "x", the ``state`` names, then the weights)."""
    def call(engine, *tensors, reverse=False, record=False):
        d = dict(zip(names, tensors))
        w = {k: v for k, v in d.items() if k != "x" and k not in state}
        return engine.run(d["x"], tuple(d[k] for k in state), w, sizes, reverse, opts, masks, record)
    return call
