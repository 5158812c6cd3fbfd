"""The torch.nn-compatible modules: ``LSTM``, ``GRU``, ``RNN`` (torch.nn subclasses), their cells,
and ``MinGRU``, ``MinLSTM``, ``SLSTM``; their argument checks and initialisation schemes.
"""
