"""What the compare report shows inside the networks: ‖∂L/∂h_t‖ over time, and the gates.

The gradient with respect to the hidden state h_t is the *total* derivative, through every later
step. The fused engines return only the final state, so we run the network one step at a time,
feeding each step's state to the next call, keep those states' gradients (``retain_grad``) and
read the loss from them. In a plain tanh RNN the norm decays geometrically going back from the
loss; in an LSTM or GRU the gates keep it alive: that is the vanishing-gradient picture.

The gate heat maps come from the module itself, ``forward(..., return_gates=True)``.

Example:
    >>> import torch
    >>> from gatedrnn.toolkit.model import build_model
    >>> from gatedrnn.toolkit.tasks import get_task
    >>> task = get_task("adding", length=6)
    >>> model = build_model(task, "lstm", 4)
    >>> batch = task.train_batch(torch.Generator().manual_seed(0), 3)
    >>> hidden_gradient_norms(model, task, batch).shape
    torch.Size([6])
    >>> sorted(inside(model, batch.x[:1]))
    ['forget', 'hidden', 'input', 'output']
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor

from .model import SequenceModel
from .tasks import Batch, Task

SHOWN_GATES = {"LSTM": ("forget", "input", "output"), "GRU": ("reset", "update"), "RNN": (),
               "MinGRU": ("update",), "MinLSTM": ("forget", "input"),
               "SLSTM": ("forget", "input", "output")}


def hidden_gradient_norms(model: SequenceModel, task: Task, batch: Batch) -> Tensor:
    """‖∂L_i/∂h_t‖ for t = 1..T, averaged over the batch's sequences i (top layer). Shape (T,).

    L_i is sequence i's own loss, so the numbers do not shrink with the batch size. Needs a
    unidirectional model and a padded (not packed) batch. Dropout-type variants are off (eval mode).
    """
    if model.rnn.bidirectional or not isinstance(batch.x, Tensor):
        raise ValueError("gradient norms need a unidirectional model and a padded batch")
    was_training = model.training
    model.eval()
    x = model.features(batch.x)  # (B, T, I)
    state = None
    hs: list[Tensor] = []
    for t in range(x.shape[1]):
        _, state = model.rnn(x[:, t:t + 1], state)
        h = state[0] if isinstance(state, tuple) else state  # (layers, B, H_out)
        h.retain_grad()
        hs.append(h)
    # Build the readout from the retained states so that every path to the loss goes through them.
    output = torch.stack([h[-1] for h in hs], dim=1)  # (B, T, H_out)
    loss = task.loss(model.readout(output, hs[-1]), batch.y) * x.shape[0]
    loss.backward()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    grads = [cast(Tensor, h.grad) for h in hs]  # (every h retained its gradient)
    return torch.stack([g[-1].norm(dim=-1).mean() for g in grads]).detach()  # (T,)


@torch.no_grad()
def inside(model: SequenceModel, x: Tensor) -> dict[str, Tensor]:
    """The shown gates and the hidden state of the top layer for one sequence ``x`` (1, T, ...):
    name -> (T, H). LSTM: forget, input, output; GRU: reset, update; minGRU: update; minLSTM:
    forget, input (before their normalisation); sLSTM: forget, input (exponential, stabilised),
    output; every cell: hidden."""
    was_training = model.training
    model.eval()
    output, _, gates = model.rnn(model.features(x), return_gates=True)
    model.train(was_training)
    kind = model.rnn.get_config()["type"]
    shown = {name: gates[name][-1, :, 0] for name in SHOWN_GATES[kind]}  # (T, H) of the top layer
    shown["hidden"] = output[0]  # (T, H_out)
    return shown
