"""The Triton engine: GPU kernels for the variants, head-wise recurrence, sLSTM and the minimal cells.

One ``run`` per cell, with the engine contract of ``gatedrnn.equations.reference.run``:

    run(x, state, w, batch_sizes, reverse, opts, masks, record) -> (y, state_n, gates)

- ``lstm.run``: LSTM with layer norm, peepholes, zoneout, recurrent dropout, ``num_heads``;
- ``gru.run``: GRU in both forms (``opts.reset_after``), with the same variants;
- ``slstm.run``: sLSTM, dense or head-wise;
- ``minrnn.run``: minGRU and minLSTM (``opts.mode``) as a linear-space ``tl.associative_scan``.

The LSTM, GRU and sLSTM alternate a torch GEMM (the recurrent product) and one Triton kernel per
step (``common`` has the shared plumbing); with heads of 16-64 units they run as one persistent
kernel per direction instead (``lstm_heads``, ``gru_heads``, ``slstm_heads``), where the variants
allow it.

The kernels run on CUDA tensors, and on CPU tensors only under Triton's interpreter
(``TRITON_INTERPRET=1``, which is how they are tested). Nothing here imports triton until a ``run``
module is imported, so ``available``, ``check`` and ``run_for`` work where triton is missing.

Example (on a GPU; skipped where there is none):
    >>> import torch
    >>> from gatedrnn.equations.cells import CellOptions
    >>> from gatedrnn.engines.triton import run_for
    >>> T, B, I, H = 5, 2, 3, 4
    >>> w = {"w_ih": torch.randn(4 * H, I), "w_hh": torch.randn(4 * H, H),
    ...      "ln_x_w": torch.ones(4 * H), "ln_x_b": torch.zeros(4 * H),
    ...      "ln_h_w": torch.ones(4 * H), "ln_h_b": torch.zeros(4 * H),
    ...      "ln_c_w": torch.ones(H), "ln_c_b": torch.zeros(H)}
    >>> w = {k: v.cuda() for k, v in w.items()}  # doctest: +SKIP
    >>> state = (torch.zeros(B, H, device="cuda"), torch.zeros(B, H, device="cuda"))  # doctest: +SKIP
    >>> y, (h, c), _ = run_for("lstm")(torch.randn(T, B, I, device="cuda"), state, w, None, False,
    ...                                CellOptions("lstm", layer_norm=True), {}, False)  # doctest: +SKIP
    >>> y.shape  # doctest: +SKIP
    torch.Size([5, 2, 4])
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable

from torch import Tensor

FALLBACK_ENGINES = ('"auto"', '"fused"', '"reference"')
MODULES = {"lstm": "lstm", "gru": "gru", "slstm": "slstm", "mingru": "minrnn", "minlstm": "minrnn"}
"""CellOptions.mode -> the module whose ``run`` computes it (the Elman RNN has no Triton kernel:
cuDNN covers it, and its variants are few)."""


def run_for(mode: str) -> Callable:
    """The Triton engine's ``run`` for a cell mode, importing triton on first use. Raises
    ValueError for a mode it does not have."""
    if mode not in MODULES:
        raise ValueError(f'engine="triton" has no kernel for mode {mode!r}; it runs '
                         f"{', '.join(MODULES)}")
    return importlib.import_module(f"{__name__}.{MODULES[mode]}").run


def interpreting() -> bool:
    """True when Triton's interpreter is switched on (kernels then run on CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available(x: Tensor) -> bool:
    """Whether the Triton engine can run on ``x``: triton importable, and x on CUDA or the
    interpreter switched on."""
    if importlib.util.find_spec("triton") is None:
        return False
    return x.is_cuda or interpreting()


def check(x: Tensor) -> None:
    """Raise a RuntimeError that says why the Triton engine cannot run on ``x`` and which
    engines can."""
    if importlib.util.find_spec("triton") is None:
        raise RuntimeError('engine="triton" needs triton: pip install "gatedrnn[gpu]"; or use '
                           f"engine={' / '.join(FALLBACK_ENGINES)}")
    if not (x.is_cuda or interpreting()):
        raise RuntimeError(
            f'engine="triton" runs on CUDA tensors (got one on {x.device}); on the CPU only '
            "under Triton's interpreter (TRITON_INTERPRET=1, for tests). Use "
            f"engine={' / '.join(FALLBACK_ENGINES)} here")
