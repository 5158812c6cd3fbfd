"""The toolkit: tasks, training, checkpoints, the compare report and its figures.

Built on the public modules (``gatedrnn.LSTM/GRU/RNN``); the core never imports it. One idea per file:
    base.py        the task interface (Task, Batch)
    tasks.py       the synthetic long-memory tasks (adding, copy, selective copy) and get_task
    datasets.py    offline real data: MNIST-1D, UEA/UCR series, character text, sunspots
    tsfile.py      a numpy-only reader of the UEA/UCR ``.ts`` files
    networks.py    a batch-first gatedrnn network from a cell name
    model.py       (embedding) -> LSTM/GRU/RNN -> linear head
    blocks.py      residual blocks of any cell, as the minGRU and xLSTM papers stack them
    defaults.py    the per-task training defaults, one table for the CLI, compare and train()
    train.py       Adam, clipping, JSONL log, checkpoints, exact resume, DDP
    checkpoint.py  safetensors + JSON checkpoints, written atomically, loaded without pickle
    analysis.py    ‖∂L/∂h_t‖ over time, and the gates from ``return_gates=True``
    compare.py     tanh RNN vs LSTM vs GRU side by side (``gatedrnn compare``)
    plots.py       learning curves, gradient norms, gate heat maps (matplotlib, Agg)
    sample.py      text from a character model (``gatedrnn sample``)
    bench.py       speed against torch.nn (``gatedrnn bench``)
"""

from .blocks import BlockStack, ResidualBlock

__all__ = ["BlockStack", "ResidualBlock"]
