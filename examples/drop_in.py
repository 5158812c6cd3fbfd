"""Switch from torch.nn with one import: same arguments, same state_dict, same outputs."""

import torch
from torch.nn.utils.rnn import pack_padded_sequence

import gatedrnn

torch.manual_seed(0)
theirs = torch.nn.LSTM(8, 32, num_layers=2, bidirectional=True, batch_first=True)
ours = gatedrnn.LSTM(8, 32, num_layers=2, bidirectional=True, batch_first=True)
ours.load_state_dict(theirs.state_dict())

x = torch.randn(4, 10, 8)
packed = pack_padded_sequence(x, torch.tensor([10, 3, 7, 5]), batch_first=True, enforce_sorted=False)
out_ours, (h_ours, _) = ours(packed)
out_theirs, (h_theirs, _) = theirs(packed)
print("max |difference| of h_n:", (h_ours - h_theirs).abs().max().item())
assert torch.allclose(out_ours.data, out_theirs.data, atol=1e-5)
