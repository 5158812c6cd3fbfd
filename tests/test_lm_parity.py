"""A real client, as under torch.nn: pytorch/examples' word language model, small and seeded.

A drop-in check ran pytorch/examples ``word_language_model`` unchanged with torch.nn's recurrent
classes swapped for gatedrnn's. This is that comparison in miniature, written in our own words:
embedding -> dropout -> 2-layer recurrent net with dropout 0.2 -> dropout -> linear decoder,
truncated BPTT with the hidden state carried between batches, plain SGD with gradient clipping,
the example's initialisation. Built twice from the same seed, once with each library's class:
gatedrnn's initialisation draws torch.nn's numbers, so the weights are the same, and its
inter-layer dropout draws torch.nn's masks, so the whole run is the same computation.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import gatedrnn

VOCAB, EMBED, HIDDEN, LAYERS, DROPOUT = 40, 16, 24, 2, 0.2
BPTT, BATCH, STEPS, LR, CLIP = 8, 4, 20, 2.0, 0.25
KINDS = {"LSTM": ("LSTM", {}), "GRU": ("GRU", {}), "RNN_TANH": ("RNN", {"nonlinearity": "tanh"}),
         "RNN_RELU": ("RNN", {"nonlinearity": "relu"})}


class LanguageModel(nn.Module):
    """Encoder, recurrent net and decoder, as pytorch/examples' RNNModel (without weight tying)."""

    def __init__(self, library: Any, kind: str) -> None:
        super().__init__()
        name, extra = KINDS[kind]
        self.drop = nn.Dropout(DROPOUT)
        self.encoder = nn.Embedding(VOCAB, EMBED)
        self.rnn = getattr(library, name)(EMBED, HIDDEN, LAYERS, dropout=DROPOUT, **extra)
        self.decoder = nn.Linear(HIDDEN, VOCAB)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, tokens: Tensor, hidden: Any) -> tuple[Tensor, Any]:
        emb = self.drop(self.encoder(tokens))  # (T, B, E)
        output, hidden = self.rnn(emb, hidden)  # (T, B, H)
        logits = self.decoder(self.drop(output))  # (T, B, V)
        return F.log_softmax(logits.view(-1, VOCAB), dim=1), hidden


def corpus() -> Tensor:
    """A token stream with structure to learn: a random sparse Markov chain over the vocabulary,
    batchified as in the example: (length, BATCH) columns."""
    gen = torch.Generator().manual_seed(1234)
    successors = torch.randint(0, VOCAB, (VOCAB, 3), generator=gen)
    tokens = [0]
    for _ in range(BATCH * (STEPS * BPTT + 1) - 1):
        pick = int(torch.randint(0, 3, (1,), generator=gen))
        tokens.append(int(successors[tokens[-1], pick]))
    return torch.tensor(tokens).view(BATCH, -1).t().contiguous()


def detach(hidden: Any) -> Any:
    return tuple(detach(h) for h in hidden) if isinstance(hidden, tuple) else hidden.detach()


def run(library: Any, kind: str) -> tuple[dict[str, Tensor], list[float]]:
    """Train for STEPS batches; returns the initial weights and the loss of every batch."""
    torch.manual_seed(0)
    model = LanguageModel(library, kind).train()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    data, hidden, losses = corpus(), None, []
    for step in range(STEPS):
        x, y = data[step * BPTT:(step + 1) * BPTT], data[step * BPTT + 1:(step + 1) * BPTT + 1]
        hidden = detach(hidden) if hidden is not None else None
        model.zero_grad()
        log_probs, hidden = model(x, hidden)
        loss = F.nll_loss(log_probs, y.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(p.grad, alpha=-LR)
        losses.append(loss.item())
    return start, losses


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    # Tiny matrices: OpenMP threads only spin against the other processes on a shared machine
    # (here 4 s per run with the default threads, 0.1 s with one).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_language_model_trains_as_under_torch_nn(kind: str) -> None:
    ref_start, ref = run(nn, kind)
    our_start, ours = run(gatedrnn, kind)
    for name, value in ref_start.items():  # the same seed gives the same weights
        assert torch.equal(our_start[name], value), name
    assert ours[0] == pytest.approx(ref[0], rel=2e-7, abs=0)  # float32 precision
    # The curves stay together: the same masks, so only rounding differs. Worst relative gap
    # measured over the 20 steps: 1.4e-7 (RNN_RELU; LSTM 6.9e-8, GRU 7.6e-8, RNN_TANH 8.1e-8).
    gaps = [abs(a - b) / b for a, b in zip(ours, ref, strict=True)]
    assert max(gaps) < 1e-6, gaps
    assert ref[-1] < 0.95 * ref[0]  # and the model learnt something: a curve worth comparing
