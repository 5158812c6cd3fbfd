"""The tensors a model config describes, by arithmetic alone: checked before anything is built.

A tiny file can claim ``num_layers=20000`` or ``hidden_size=10**9``. Building that model, even on
the meta device, takes minutes (20000 layers of modules) or overflows torch's size arithmetic
("Storage size calculation overflowed"). ``config_misfit`` compares the file's tensors with
the names and shapes the config's arithmetic gives (their count first), so such a file is a
``CheckpointError`` naming it (``gatedrnn.interop.io.check_config_fits``), in microseconds, with
nothing built.

Example:
    >>> import gatedrnn
    >>> from gatedrnn.interop.shapes import config_misfit
    >>> gru = gatedrnn.GRU(3, 4, num_layers=2)
    >>> config_misfit(gru.state_dict(), gru.get_config()) is None
    True
    >>> config_misfit(gru.state_dict(), gru.get_config() | {"num_layers": 20000})[:50]
    'its config describes 80000 tensors (20000 layers o'
"""

from __future__ import annotations

from typing import Any

import torch

_GATE_COUNT = {"LSTM": 4, "GRU": 3, "RNN": 1, "MinGRU": 2, "MinLSTM": 3, "SLSTM": 4}


def _direction_shapes(config: dict[str, Any], layer: int, sfx: str) -> dict[str, tuple[int, ...]]:
    """The parameters of one layer and direction of a checked ``config``: names and shapes by
    arithmetic, as the modules register them (tests/test_interop_io.py holds the two together)."""
    kind, H, D = config["type"], config["hidden_size"], 2 if config["bidirectional"] else 1
    G, P, nh = _GATE_COUNT[kind], config.get("proj_size", 0), config.get("num_heads", 1)
    torch_like = kind in ("LSTM", "GRU", "RNN")
    out_size = P or H
    shapes: dict[str, tuple[int, ...]] = {
        "weight_ih": (G * H, config["input_size"] if layer == 0 else out_size * D)}
    if torch_like or kind == "SLSTM":
        shapes["weight_hh"] = (G * H, out_size) if nh == 1 else (nh, G * H // nh, H // nh)
    if config["bias"]:
        shapes["bias_ih"] = (G * H,)
        if torch_like or kind == "SLSTM":
            shapes["bias_hh"] = (G * H,)
    if P:
        shapes["weight_hr"] = (P, H)
    for which in ("x", "h", "c") if config.get("layer_norm") else ():
        if which != "c" or kind == "LSTM":
            for part in ("weight", "bias"):
                shapes[f"layer_norm_{which}_{part}"] = (H if which == "c" else G * H,)
    if config.get("peephole"):
        shapes["weight_peephole"] = (3, H)
    return {f"{name}{sfx}": shape for name, shape in shapes.items()}


def config_misfit(tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> str | None:
    """Why ``tensors`` are not exactly the parameters a checked ``config`` describes (by name and
    shape, from its arithmetic alone), or None when they are. The caller raises, naming its file
    (``gatedrnn.interop.io.check_config_fits``).

    A tiny file can claim ``num_layers=20000`` or ``hidden_size=10**9``; building that model, even
    on the meta device, takes minutes or overflows torch's size arithmetic. The count of tensors
    per layer times the layers must be the file's count, and each shape the file's, first."""
    D = 2 if config["bidirectional"] else 1
    if config.get("num_heads", 1) > 1 and config["hidden_size"] % config["num_heads"]:
        return (f"its config does not build a gatedrnn module (hidden_size "
                f"{config['hidden_size']} is not divisible by num_heads {config['num_heads']})")
    per_layer = D * len(_direction_shapes(config, 0, "_l0"))
    if per_layer * config["num_layers"] != len(tensors):
        return (f"its config describes {per_layer * config['num_layers']} tensors "
                f"({config['num_layers']} layers of {per_layer}), the file holds {len(tensors)}: "
                "its tensors do not fit the model")
    want: dict[str, tuple[int, ...]] = {}
    for layer in range(config["num_layers"]):
        for d in range(D):
            want.update(_direction_shapes(config, layer, f"_l{layer}" + ("_reverse" if d else "")))
    missing, unexpected = sorted(set(want) - set(tensors)), sorted(set(tensors) - set(want))
    if missing or unexpected:
        return f"its tensors do not fit the model (missing {missing}, unexpected {unexpected})"
    for name, shape in want.items():
        if tuple(tensors[name].shape) != shape:
            return (f"tensor {name!r} has shape {tuple(tensors[name].shape)} in the file, the "
                    f"config's model has {shape}")
    return None
