"""Keras 3 ↔ gatedrnn: ``from_keras(layer)`` and ``to_keras(module)`` with identical outputs.

Covers ``keras.layers.LSTM``, ``GRU`` (reset_after True and False), ``SimpleRNN`` and
``Bidirectional`` around any of them (merge_mode "concat"). Keras layers are batch-first, so
``from_keras`` builds ``batch_first=True`` modules. Only the weights and the options that change
what a layer computes are translated; the conversion never runs either framework's forward.

The layouts (Keras' LSTM and GRU layers against torch.nn's), for one direction with U units:
    Keras kernel (I, G·U), recurrent_kernel (U, G·U): columns per gate; torch stores rows.
    LSTM: gates i, f, c, o in both. Keras has one bias (4U); torch has two, which only add.
    GRU:  Keras z, r, h against torch r, z, n (keras #8720, #15915: the usual trap).
        reset_after=True:  Keras bias (2, 3U) = [input bias; recurrent bias] = torch's b_ih, b_hh.
        reset_after=False: Keras has one bias (3U). In that form every bias sits outside the
            reset product (n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)), so b_ih + b_hh is it.
    SimpleRNN: one block; one bias.

Training-only options travel where Keras has the same idea (recurrent_dropout, variational in
both, though the masks are drawn differently); Keras' input ``dropout`` has no gatedrnn twin and
is dropped with a warning. Options Keras cannot compute (peepholes, layer norm, projections,
zoneout, several layers, head-wise recurrence) raise ``ValueError`` naming the option.

Example:
    >>> import os; os.environ.setdefault("KERAS_BACKEND", "torch")
    'torch'
    >>> import keras, numpy as np, torch
    >>> from gatedrnn.interop.keras import from_keras
    >>> layer = keras.layers.GRU(4, reset_after=False, return_sequences=True)
    >>> x = np.random.rand(2, 5, 3).astype("float32")
    >>> y_keras = keras.ops.convert_to_numpy(layer(x))
    >>> gru = from_keras(layer).eval()
    >>> bool(np.allclose(gru(torch.from_numpy(x))[0].detach().numpy(), y_keras, atol=1e-5))
    True
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

import gatedrnn

# Keras gate blocks as indices into torch's blocks (and back: both permutations are involutions).
_TO_TORCH = {"LSTM": [0, 1, 2, 3], "GRU": [1, 0, 2], "SimpleRNN": [0]}
_KERAS_NAME = {"LSTM": "LSTM", "GRU": "GRU", "RNN": "SimpleRNN"}


def _blocks(a: np.ndarray, order: list[int], axis: int) -> np.ndarray:
    """Permute the gate blocks of ``a`` along ``axis``."""
    parts = np.split(a, len(order), axis=axis)
    return np.concatenate([parts[j] for j in order], axis=axis)


def _t(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)


# --- Keras -> gatedrnn ----------------------------------------------------------------------------


def _check_keras_layer(layer: Any, backward: bool = False) -> tuple[str, dict[str, Any]]:
    kind = type(layer).__name__
    if kind not in _TO_TORCH:
        raise TypeError(f"from_keras takes keras.layers.LSTM, GRU, SimpleRNN or Bidirectional, got {kind}")
    cfg = layer.get_config()
    if kind == "SimpleRNN":
        if cfg["activation"] not in ("tanh", "relu"):
            raise ValueError(f"SimpleRNN activation={cfg['activation']!r}: gatedrnn.RNN has tanh or relu")
    elif cfg["activation"] != "tanh" or cfg["recurrent_activation"] != "sigmoid":
        raise ValueError(
            f"{kind}(activation={cfg['activation']!r}, recurrent_activation="
            f"{cfg['recurrent_activation']!r}): gatedrnn computes tanh and sigmoid"
        )
    if bool(cfg.get("go_backwards")) != backward:  # only Bidirectional's backward layer runs backwards
        where = "as Bidirectional's backward layer" if backward else "on its own (wrap it in Bidirectional)"
        raise ValueError(f"{kind}(go_backwards={cfg.get('go_backwards')}) does not convert {where}")
    if cfg.get("dropout", 0.0) > 0:
        warnings.warn(
            f"{kind}(dropout={cfg['dropout']}) drops inputs in training; gatedrnn has no input dropout, "
            "so it is not carried over (evaluation outputs are unaffected)",
            UserWarning,
            stacklevel=3,
        )
    return kind, cfg


def _torch_weights(kind: str, cfg: dict[str, Any], weights: list[np.ndarray], sfx: str,
                   dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """One Keras direction's weights as the torch.nn parameters of layer 0 (suffix ``sfx``)."""
    order = _TO_TORCH[kind]
    kernel, recurrent = weights[0], weights[1]
    out = {f"weight_ih_l0{sfx}": _t(_blocks(kernel, order, 1).T, dtype),
           f"weight_hh_l0{sfx}": _t(_blocks(recurrent, order, 1).T, dtype)}
    if cfg["use_bias"]:
        bias = weights[2]
        if kind == "GRU" and cfg["reset_after"]:
            b_ih, b_hh = _blocks(bias[0], order, 0), _blocks(bias[1], order, 0)
        else:
            # One additive bias: all of it on the input side, zero on the recurrent side.
            b_ih = _blocks(bias, order, 0)
            b_hh = np.zeros_like(b_ih)
        out[f"bias_ih_l0{sfx}"], out[f"bias_hh_l0{sfx}"] = _t(b_ih, dtype), _t(b_hh, dtype)
    return out


def from_keras(layer: Any, **options: Any) -> gatedrnn.modules.recurrent.RNNBase:
    """A batch-first gatedrnn module computing what the Keras ``layer`` computes.

    ``options`` go to the gatedrnn constructor (for example ``engine="fused"``). The layer must be
    built (called once, or ``layer.build(input_shape)``).

    Example:
        >>> import os; os.environ.setdefault("KERAS_BACKEND", "torch")
        'torch'
        >>> import keras
        >>> from gatedrnn.interop.keras import from_keras
        >>> layer = keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True))
        >>> layer.build((None, None, 3))
        >>> from_keras(layer)
        LSTM(3, 4, batch_first=True, bidirectional=True)
    """
    directions = [layer]
    if type(layer).__name__ == "Bidirectional":
        if layer.merge_mode != "concat":
            raise ValueError(
                f"Bidirectional(merge_mode={layer.merge_mode!r}): gatedrnn concatenates the two "
                "directions, so only merge_mode='concat' converts"
            )
        directions = [layer.forward_layer, layer.backward_layer]
    kind, cfg = _check_keras_layer(directions[0])
    if options.get("num_heads", 1) != 1:
        raise ValueError(f"from_keras: num_heads={options['num_heads']!r} would make the recurrence "
                         "head-wise, and Keras' recurrent kernel is dense")
    if not layer.built:
        raise ValueError("the Keras layer has no weights yet: call it once or layer.build(input_shape)")
    for other in directions[1:]:
        if _check_keras_layer(other, backward=True)[0] != kind or other.get_config()["units"] != cfg["units"]:
            raise ValueError("Bidirectional with different forward and backward layers does not convert")
    dtype = getattr(torch, directions[0].dtype)
    kernel = directions[0].get_weights()[0]
    kw: dict[str, Any] = dict(batch_first=True, bias=cfg["use_bias"], bidirectional=len(directions) == 2,
                              dtype=dtype)
    if cfg.get("recurrent_dropout", 0.0) > 0:
        kw["recurrent_dropout"] = cfg["recurrent_dropout"]
    if kind == "GRU":
        kw["reset_after"] = cfg["reset_after"]
    if kind == "SimpleRNN":
        kw["nonlinearity"] = cfg["activation"]
    cls = {"LSTM": gatedrnn.LSTM, "GRU": gatedrnn.GRU, "SimpleRNN": gatedrnn.RNN}[kind]
    module = cls(kernel.shape[0], cfg["units"], **kw, **options)
    state = {}
    for d, direction in enumerate(directions):
        state.update(_torch_weights(kind, cfg, direction.get_weights(), "_reverse" if d else "", dtype))
    module.load_state_dict(state)  # strict: every parameter is set, none left at its init
    return module


# --- gatedrnn -> Keras ----------------------------------------------------------------------------


def _check_module(module: Any) -> str:
    kind = _KERAS_NAME.get(type(module).__name__)
    if kind is None:
        raise TypeError(f"to_keras takes gatedrnn.LSTM, GRU or RNN, got {type(module).__name__}")
    cfg = module.get_config()
    blocked = {"num_layers": 1, "proj_size": 0, "peephole": False, "layer_norm": False, "zoneout": 0.0,
               "zoneout_cell": 0.0, "num_heads": 1}
    bad = [f"{k}={cfg[k]!r}" for k, v in blocked.items() if k in cfg and cfg[k] != v]
    if bad:
        raise ValueError(
            f"{type(module).__name__}({', '.join(bad)}) has no Keras equivalent "
            "(Keras layers are single-layer LSTM/GRU/SimpleRNN without these variants)"
        )
    if cfg.get("weight_drop", 0.0) > 0:
        warnings.warn(f"weight_drop={cfg['weight_drop']} has no Keras equivalent and is not carried "
                      "over (evaluation outputs are unaffected)", UserWarning, stacklevel=3)
    return kind


def _keras_weights(kind: str, module: Any, sfx: str, reset_after: bool) -> list[np.ndarray]:
    order = _TO_TORCH[kind]
    p = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    weights = [_blocks(p[f"weight_ih_l0{sfx}"].T, order, 1), _blocks(p[f"weight_hh_l0{sfx}"].T, order, 1)]
    if module.bias:
        b_ih, b_hh = _blocks(p[f"bias_ih_l0{sfx}"], order, 0), _blocks(p[f"bias_hh_l0{sfx}"], order, 0)
        weights.append(np.stack([b_ih, b_hh]) if reset_after else b_ih + b_hh)
    return weights


def to_keras(module: Any, **layer_kwargs: Any) -> Any:
    """A built Keras layer computing what the single-layer gatedrnn ``module`` computes.

    The layer returns sequences and states (``return_sequences=True, return_state=True``) unless
    ``layer_kwargs`` say otherwise, and takes batch-first input like every Keras layer.

    Example:
        >>> import os; os.environ.setdefault("KERAS_BACKEND", "torch")
        'torch'
        >>> import gatedrnn
        >>> from gatedrnn.interop.keras import to_keras
        >>> type(to_keras(gatedrnn.GRU(3, 4, reset_after=False))).__name__
        'GRU'
    """
    import keras

    kind = _check_module(module)
    reset_after = kind == "GRU" and module.reset_after
    kw: dict[str, Any] = dict(return_sequences=True, return_state=True, use_bias=module.bias,
                              dtype=str(module.weight_ih_l0.dtype).removeprefix("torch."))
    if kind == "GRU":
        kw["reset_after"] = reset_after
    if kind == "SimpleRNN":
        kw["activation"] = module.nonlinearity
    elif module.recurrent_dropout > 0:
        kw["recurrent_dropout"] = module.recurrent_dropout
    kw.update(layer_kwargs)
    cls = getattr(keras.layers, kind)
    layer = cls(module.hidden_size, **kw)
    weights = _keras_weights(kind, module, "", reset_after)
    if module.bidirectional:
        layer = keras.layers.Bidirectional(layer, merge_mode="concat")
        weights += _keras_weights(kind, module, "_reverse", reset_after)
    layer.build((None, None, module.input_size))
    layer.set_weights(weights)
    return layer
