"""Look inside: record every gate of every step."""

import torch

import gatedrnn

gru = gatedrnn.GRU(3, 8)
out, h, gates = gru(torch.randn(20, 1, 3), return_gates=True)
for name, value in gates.items():  # each (num_layers * num_directions, T, B, H)
    print(f"{name:9s} {tuple(value.shape)} mean {value.mean():.3f}")
