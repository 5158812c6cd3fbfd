"""The torch.nn-compatible modules: one forward for every sequence module (``base``); ``LSTM``,
``GRU``, ``RNN`` (torch.nn subclasses: ``recurrent``, ``lstm_gru_rnn``) and their cells
(``rnn_cells``); ``MinGRU``, ``MinLSTM``, ``SLSTM`` built from their declarations (``declared``,
``minimal``, ``slstm``); argument checks and initialisation schemes.
"""
