"""The variants: layer norm, peepholes, recurrent dropout, zoneout, weight drop, initialisation."""

import torch

import gatedrnn

lstm = gatedrnn.LSTM(
    16, 64, num_layers=2,
    layer_norm=True,          # Ba et al. 2016, as Haste's LayerNormLSTM
    peephole=True,            # Gers & Schmidhuber 2000
    recurrent_dropout=0.25,   # Gal & Ghahramani 2016: one mask per sequence
    zoneout=0.1,              # Krueger et al. 2016
    weight_drop=0.3,          # Merity et al. 2017 (AWD-LSTM)
    forget_bias=1.0,          # Jozefowicz et al. 2015
)
gru = gatedrnn.GRU(16, 64, reset_after=False, init="chrono", chrono_max_len=100)

x = torch.randn(30, 8, 16)
out, (h, c) = lstm(x)
out.sum().backward()
print("LSTM output", tuple(out.shape), "GRU output", tuple(gru(x)[0].shape))
