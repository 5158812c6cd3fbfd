"""torch.nn ↔ gatedrnn: ``from_torch(nn_module)`` and ``to_torch(module)``.

gatedrnn keeps torch.nn's parameter names, shapes and gate order, so the conversion is the
constructor arguments plus ``load_state_dict``. What needs care is the other direction: options
that torch.nn cannot compute (peepholes, layer norm, the reset-before GRU, zoneout, num_heads
> 1) raise
``ValueError`` naming the option, and training-only options it lacks (recurrent_dropout,
weight_drop) are dropped with a warning, since evaluation outputs do not depend on them.

Example:
    >>> import torch, gatedrnn
    >>> from gatedrnn.interop.torch_nn import from_torch, to_torch
    >>> ref = torch.nn.GRU(3, 4, num_layers=2, batch_first=True)
    >>> ours = from_torch(ref, engine="reference")
    >>> x = torch.randn(2, 5, 3)
    >>> torch.allclose(ours(x)[0], ref(x)[0], atol=1e-6)
    True
    >>> type(to_torch(ours)).__name__
    'GRU'
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

import gatedrnn
from gatedrnn.modules.patch import TORCH_CLASSES  # torch's own, also under gatedrnn.patch_torch()

_SHARED = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional")


def _kwargs(module: Any) -> dict[str, Any]:
    """The torch.nn constructor arguments both libraries share, read from ``module``."""
    kw = {k: getattr(module, k) for k in _SHARED}
    kw["dtype"] = module.weight_ih_l0.dtype
    kw["device"] = module.weight_ih_l0.device
    if module.mode == "LSTM":
        kw["proj_size"] = module.proj_size
    elif module.mode.startswith("RNN_"):
        kw["nonlinearity"] = module.nonlinearity
    return kw


def from_torch(nn_module: nn.RNNBase, **options: Any) -> gatedrnn.modules.recurrent.RNNBase:
    """The gatedrnn twin of a ``torch.nn.LSTM``, ``GRU`` or ``RNN``, with its weights.

    ``options`` are gatedrnn's keyword-only extras (engine, recurrent_dropout, ...). Options that
    change the equations (peephole, layer_norm, reset_after=False) would leave torch's weights
    meaning something else, so they are refused here.

    Example:
        >>> import torch
        >>> from gatedrnn.interop.torch_nn import from_torch
        >>> from_torch(torch.nn.LSTM(3, 4, proj_size=2))
        LSTM(3, 4, proj_size=2)
    """
    classes = {TORCH_CLASSES[name]: getattr(gatedrnn, name) for name in ("LSTM", "GRU", "RNN")}
    cls = classes.get(type(nn_module))
    if cls is None:
        raise TypeError(f"from_torch takes torch.nn.LSTM, GRU or RNN, got {type(nn_module).__name__}")
    changes = {k: options[k] for k in ("peephole", "layer_norm") if options.get(k)}
    if options.get("num_heads", 1) != 1:
        changes["num_heads"] = options["num_heads"]
    if options.get("reset_after") is False:
        changes["reset_after"] = False
    if changes:
        raise ValueError(f"from_torch: {changes} would change the equations torch's weights were trained for")
    module = cls(**_kwargs(nn_module), **options)
    module.load_state_dict(nn_module.state_dict())
    module.train(nn_module.training)
    return module


def to_torch(module: Any) -> nn.RNNBase:
    """The ``torch.nn`` module computing what the gatedrnn ``module`` computes, with its weights.

    Example:
        >>> import gatedrnn
        >>> from gatedrnn.interop.torch_nn import to_torch
        >>> to_torch(gatedrnn.RNN(3, 4, nonlinearity="relu", bidirectional=True)).mode
        'RNN_RELU'
    """
    name = type(module).__name__
    if not isinstance(module, gatedrnn.modules.recurrent.RNNBase):
        raise TypeError(f"to_torch takes gatedrnn.LSTM, GRU or RNN, got {name}")
    cfg = module.get_config()
    blocked = {"peephole": False, "layer_norm": False, "reset_after": True, "zoneout": 0.0,
               "zoneout_cell": 0.0, "num_heads": 1}
    bad = [f"{k}={cfg[k]!r}" for k, v in blocked.items() if k in cfg and cfg[k] != v]
    if bad:
        raise ValueError(f"{name}({', '.join(bad)}) has no torch.nn equivalent")
    dropped = [f"{k}={cfg[k]}" for k in ("recurrent_dropout", "weight_drop") if cfg.get(k, 0.0) > 0]
    if dropped:
        warnings.warn(f"{', '.join(dropped)} has no torch.nn equivalent and is not carried over "
                      "(evaluation outputs are unaffected)", UserWarning, stacklevel=2)
    ref = TORCH_CLASSES[name](**_kwargs(module))
    with torch.no_grad():
        ref.load_state_dict(module.state_dict())
    ref.train(module.training)
    return ref
