"""Argument and input validation, raising the exception classes that ``torch.nn`` raises.

Messages name the problem and the fix. Where torch.nn's own class is an accident of its code path
(see ``StateTypeError``), we raise a class that is every one of torch's and a TypeError.
"""

from __future__ import annotations

import numbers
import warnings

import torch
from torch import Tensor


def check_constructor(
    name: str,
    input_size: object,
    hidden_size: object,
    num_layers: object,
    bias: object,
    batch_first: object,
    dropout: object,
    proj_size: object,
) -> None:
    """Constructor checks, in torch.nn.RNNBase's order and with its exception classes."""
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Number) or not 0 <= dropout <= 1:
        raise ValueError(
            "dropout should be a number in range [0, 1] representing the probability of an "
            f"element being zeroed, got {dropout!r}"
        )
    for arg, value in (("bias", bias), ("batch_first", batch_first)):
        if not isinstance(value, bool):
            raise TypeError(f"{arg} should be of type bool, got: {type(value).__name__}")
    for arg, value in (("input_size", input_size), ("hidden_size", hidden_size),
                       ("num_layers", num_layers), ("proj_size", proj_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{arg} should be of type int, got: {type(value).__name__}")
    for arg, value in (("input_size", input_size), ("hidden_size", hidden_size),
                       ("num_layers", num_layers)):
        if value <= 0:
            raise ValueError(f"{arg} must be greater than zero, got {value}")
    if proj_size < 0:
        raise ValueError(
            f"proj_size should be a positive integer or zero to disable projections, got {proj_size}"
        )
    if proj_size >= hidden_size:
        raise ValueError(
            f"proj_size has to be smaller than hidden_size, got proj_size={proj_size} and "
            f"hidden_size={hidden_size}"
        )
    if dropout > 0 and num_layers == 1:
        warnings.warn(
            "dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
            f"expects num_layers greater than 1, but got dropout={dropout} and num_layers=1",
            stacklevel=4,
        )


def check_probability(name: str, value: object) -> float:
    """A variant's probability: a real number in [0, 1), not a bool (1 would keep nothing)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"{name} should be a number in range [0, 1), got {value!r}")
    return float(value)


INITS = ("torch", "orthogonal", "chrono")


def check_variants(gru: bool, init: str, chrono_max_len: object, layer_norm: bool,
                   reset_after: bool) -> None:
    """The variant options that depend on each other (shared by the modules and the cells)."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init == "chrono" and chrono_max_len is None:
        raise ValueError("init='chrono' needs chrono_max_len, the longest dependency to expect")
    if gru and layer_norm and not reset_after:
        raise ValueError(
            "layer_norm=True needs reset_after=True: with reset_after=False the candidate's "
            "recurrent product depends on the reset gate, so there is no one W_hh h to normalise"
        )


def check_input(name: str, x: Tensor, input_size: int, dtype: torch.dtype, packed: bool) -> None:
    """Rank, feature size, dtype and sequence length of the input."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: input must be a Tensor or PackedSequence, got {type(x).__name__}")
    if not packed and x.dim() not in (2, 3):
        raise ValueError(f"{name}: Expected input to be 2D or 3D, got {x.dim()}D instead")
    if x.dtype != dtype and not torch.is_autocast_enabled():
        raise ValueError(
            f"{name}: input dtype ({x.dtype}) does not match weight dtype ({dtype}). "
            f"Convert input: input.to({dtype}), or convert model: model.to({x.dtype})"
        )
    if x.shape[-1] != input_size:
        raise RuntimeError(
            f"{name}: input.size(-1) must be equal to input_size. Expected {input_size}, "
            f"got {x.shape[-1]}"
        )


def check_length(name: str, T: int) -> None:
    if T == 0:
        raise RuntimeError(f"{name}: Expected sequence length to be larger than 0 in RNN")


def check_hidden(
    name: str, which: str, hx: object, expected: tuple[int, ...], dtype: torch.dtype, device
) -> None:
    """One state tensor: a Tensor of exactly the expected shape, dtype and device."""
    if not isinstance(hx, Tensor):
        raise TypeError(f"{name}: {which} must be a Tensor, got {type(hx).__name__}")
    if tuple(hx.shape) != tuple(expected):
        raise RuntimeError(
            f"{name}: Expected {which} size {tuple(expected)}, got {list(hx.shape)} "
            "(num_layers * num_directions, batch, hidden)"
        )
    if hx.dtype != dtype:
        raise RuntimeError(f"{name}: {which} dtype ({hx.dtype}) does not match input dtype ({dtype})")
    if hx.device != device:
        raise RuntimeError(f"{name}: {which} is on {hx.device} but input is on {device}")


class StateTypeError(TypeError, AttributeError, IndexError, RuntimeError):
    """hx of the wrong type: an LSTM given a tensor, or a GRU/RNN given a tuple.

    torch.nn raises IndexError, RuntimeError or AttributeError for these, depending on the shape it
    trips over first. This class is all of them and a TypeError, so every ``except`` written for
    torch.nn still catches it, and the message says what was expected.
    """


def check_state_arity(name: str, hx: object, is_lstm: bool) -> None:
    """An LSTM's state is a pair (h, c); the others take one tensor."""
    if is_lstm:
        if isinstance(hx, Tensor) or not isinstance(hx, (tuple, list)) or len(hx) != 2:
            got = type(hx).__name__
            if isinstance(hx, (tuple, list)):
                got += f" of length {len(hx)}"
            raise StateTypeError(f"{name} expects hx as a tuple (h_0, c_0) of two tensors, got {got}")
    elif not isinstance(hx, Tensor):
        raise StateTypeError(f"{name} expects hx as a Tensor, got {type(hx).__name__}")
