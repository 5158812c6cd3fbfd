"""Argument and input validation that raises what ``torch.nn`` raises, class for class.

torch.nn's constructors validate torch's own arguments (gatedrnn's classes subclass them). What is
left here:
- ``check_options``: gatedrnn's keyword-only options (engine, the variants, init).
- ``module_args`` / ``cell_args``: torch.nn's ``forward`` up to its ``_VF`` call, step for step
  (the same ``.dim()`` calls, the module's own ``check_forward_args`` and ``permute_hidden``), then
  the checks torch's op makes, with the op's exception class. So the reference and fused engines
  accept exactly what torch.nn accepts and raise what it raises: a list as input gives the same
  AttributeError, a 3-D hx to a cell the same ValueError, a dtype mismatch in a cell the same
  RuntimeError.
"""

from __future__ import annotations

import math
import numbers
import operator
import warnings
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

INITS = ("torch", "orthogonal", "chrono")
PROBABILITIES = ("recurrent_dropout", "zoneout", "zoneout_cell", "weight_drop")
FLAGS = ("reset_after", "layer_norm", "peephole")


def check_probability(name: str, value: object) -> float:
    """A variant's probability: a real number in [0, 1), not a bool (1 would keep nothing)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= cast(float, value) < 1:
        raise ValueError(f"{name} should be a number in range [0, 1), got {value!r}")
    return float(value)


def check_options(options: dict[str, Any], engines: tuple[str, ...], gru: bool) -> dict[str, Any]:
    """gatedrnn's keyword-only options, checked; returns them normalised (floats as floats)."""
    out = dict(options)
    if not isinstance(out["engine"], str) or out["engine"] not in engines:
        raise ValueError(f"engine must be one of {engines}, got {out['engine']!r}")
    for key in FLAGS:
        if not isinstance(out[key], bool):
            raise TypeError(f"{key} should be of type bool, got: {type(out[key]).__name__}")
    for key in PROBABILITIES:
        out[key] = check_probability(key, out[key])
    fb = out["forget_bias"]
    if fb is not None:
        if isinstance(fb, bool) or not isinstance(fb, numbers.Real):
            raise TypeError(f"forget_bias should be a real number or None, got {type(fb).__name__}")
        if not math.isfinite(fb):
            raise ValueError(f"forget_bias must be finite, got {fb!r}")
        out["forget_bias"] = float(fb)
    nh = out["num_heads"]
    if isinstance(nh, bool) or not isinstance(nh, int) or nh <= 0:
        raise ValueError(f"num_heads must be a positive int, got {nh!r}")  # (as SLSTM's)
    if not isinstance(out["init"], str) or out["init"] not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {out['init']!r}")
    cml = out["chrono_max_len"]
    if cml is not None and (isinstance(cml, bool) or not isinstance(cml, numbers.Integral)):
        raise TypeError(f"chrono_max_len should be an int or None, got {type(cml).__name__}")
    if cml is not None:
        out["chrono_max_len"] = cml = int(cml)  # (a numpy integer: stored JSON-safe)
    if out["init"] == "chrono" and (cml is None or cml < 3):
        raise ValueError("init='chrono' needs chrono_max_len >= 3, the longest dependency to "
                         f"expect; got {cml!r}")
    if gru and out["layer_norm"] and not out["reset_after"]:
        raise ValueError(
            "layer_norm=True needs reset_after=True: with reset_after=False the candidate's "
            "recurrent product depends on the reset gate, so there is no one W_hh h to normalise"
        )
    return out


def as_int(value: Any) -> Any:
    """A size torch.nn's constructor took (an int, a bool, a numpy integer, an integer tensor of
    one element: torch's shape arguments read any of them through ``__index__``) as a plain int,
    so that ``get_config``, ``save_model`` and pickles stay JSON-safe and weights_only-safe.
    Anything ``operator.index`` refuses is returned as it is (torch's own errors follow)."""
    if isinstance(value, np.bool_):  # (no __index__, but torch reads it as 0 or 1)
        return int(value)
    try:
        return operator.index(value)
    except (TypeError, ValueError, RuntimeError):
        return value


def op_int(value: Any) -> bool:
    """Whether torch's recurrent op takes ``value`` as its ``int num_layers``: what torch's
    argument parser reads as an int64 (a Python int but not a bool, a numpy integer, a 0-dim
    integer tensor that is not bool), as opposed to what torch.nn's constructor lets through
    (``range(True)``, ``range(torch.tensor([2]))``)."""
    if isinstance(value, Tensor):
        return (value.dim() == 0 and not value.is_floating_point() and not value.is_complex()
                and value.dtype != torch.bool)
    return isinstance(value, np.integer) or (isinstance(value, int) and not isinstance(value, bool))


def check_op_args(name: str, num_layers: Any, bidirectional: Any) -> None:
    """What torch.nn's constructor stores unchecked and its op refuses at the first call, with the
    op's TypeError: a ``num_layers`` that is no int64 to it (``True``, ``torch.tensor([2])``) and
    a ``bidirectional`` that is not a bool (torch.nn builds ``bidirectional="no"`` with two
    directions, by truthiness). gatedrnn refuses them when the module is built (``name`` is the
    class's, for the message)."""
    if not op_int(num_layers):
        raise TypeError(f"{name}: num_layers should be of type int, got: {type(num_layers).__name__}")
    if not isinstance(bidirectional, bool):
        raise TypeError(f"{name}: bidirectional should be of type bool, got: "
                        f"{type(bidirectional).__name__}")


def normalise_module(m: Any) -> None:
    """After torch.nn's constructor accepted them: refuse what its op would refuse at the call
    (``check_op_args``) and store the sizes as plain ints (a bool, numpy or tensor size is read
    as torch's op reads it)."""
    check_op_args(type(m).__name__, m.num_layers, m.bidirectional)
    for key in ("input_size", "hidden_size", "num_layers", "proj_size"):
        if key in m.__dict__:
            m.__dict__[key] = as_int(m.__dict__[key])


def normalise_cell(cell: Any) -> None:
    """After torch.nn's cell constructor accepted them (any integer-like size, ``bias=1``):
    store the sizes as plain ints and ``bias`` as the bool torch.nn reads it as."""
    cell.input_size, cell.hidden_size = as_int(cell.input_size), as_int(cell.hidden_size)
    cell.bias = cell.bias_ih is not None


def check_module(m: Any) -> None:
    """``check_op_args`` on a built torch.nn-style module (LSTM, GRU, RNN): its stored arguments,
    which code may have changed since it was built."""
    check_op_args(type(m).__name__, m.num_layers, m.bidirectional)


@dataclass
class ModuleArgs:
    """A module call after torch.nn's checks: x (T, B, I) time-major, sorted by length when
    packed; state [(L·D, B, H_out)] or [h, c]; what it takes to give the output torch.nn's form."""

    x: Tensor
    state: list[Tensor]
    batch_sizes: Tensor | None
    lengths: Tensor | None
    unsorted: Tensor | None
    unbatched: bool


def _zeros(m: Any, data: Tensor, B: int) -> Any:
    LD = m.num_layers * (2 if m.bidirectional else 1)
    h = torch.zeros(LD, B, m.proj_size or m.hidden_size, dtype=data.dtype, device=data.device)
    if m.mode != "LSTM":
        return h
    return h, torch.zeros(LD, B, m.hidden_size, dtype=data.dtype, device=data.device)


def module_args(m: Any, input: Any, hx: Any) -> ModuleArgs:
    """torch.nn.{LSTM,GRU,RNN}.forward's argument handling, in its order, for module ``m``."""
    check_module(m)  # (torch's op refuses these too; the module's constructor should have)
    lstm = m.mode == "LSTM"
    tag = "RNN" if m.mode.startswith("RNN") else m.mode
    unbatched, unsorted = False, None
    batch_sizes: Tensor | None
    lengths: Tensor | None
    if isinstance(input, PackedSequence):
        data, batch_sizes, sorted_idx, unsorted = input
        hx = _zeros(m, data, int(batch_sizes[0])) if hx is None else m.permute_hidden(hx, sorted_idx)
        if lstm:
            packed_lstm_state(m, data, batch_sizes, hx)
        else:
            m.check_forward_args(data, hx, batch_sizes)
        x, lengths = torch.nn.utils.rnn.pad_packed_sequence(PackedSequence(data, batch_sizes))
    else:
        batch_sizes = lengths = None
        if input.dim() not in (2, 3):
            kind = " tensor" if tag == "RNN" else ""
            raise ValueError(f"{tag}: Expected input to be 2D or 3D, got {input.dim()}D{kind} instead")
        unbatched = input.dim() == 2
        data = input.unsqueeze(0 if m.batch_first else 1) if unbatched else input
        want = 2 if unbatched else 3
        form = "unbatched 2-D" if unbatched else "batched 3-D"
        if hx is not None and lstm:
            if hx[0].dim() != want or hx[1].dim() != want:
                raise RuntimeError(f"For {form} input, hx and cx should also be {want}-D but got "
                                   f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
            hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1)) if unbatched else hx
        elif hx is not None:
            if hx.dim() != want:
                raise RuntimeError(f"For {form} input, hx should also be {want}-D but got "
                                   f"{hx.dim()}-D tensor")
            hx = hx.unsqueeze(1) if unbatched else hx
        if hx is None:
            hx = _zeros(m, data, data.size(0) if m.batch_first else data.size(1))
        m.check_forward_args(data, hx, None)
        x = data.transpose(0, 1) if m.batch_first else data
    state = list(hx) if lstm else [hx]
    if lstm and len(state) != 2:
        raise RuntimeError(f"lstm expects two hidden states, got {len(state)}")
    _check_op(x, state, m.weight_ih_l0)
    _check_weights(x, m)
    return ModuleArgs(x, state, batch_sizes, lengths, unsorted, unbatched)


def packed_lstm_state(m: Any, data: Tensor, batch_sizes: Tensor, hx: Any,
                      sorted_indices: Tensor | None = None) -> None:
    """The checks torch.nn.LSTM skips for a packed input (raising RuntimeError, as its op does
    for most of them). Without them torch's op reads past a c_0 with too few layers and the
    process dies (torch 2.13: a segmentation fault), so the native engine runs them too.

    ``hx`` as torch's op receives it: give the packed input's ``sorted_indices`` when ``hx`` is the
    caller's (torch.nn permutes it first, and an IndexError from there wins); a single tensor is
    refused with the op's TypeError (it takes a tuple of tensors)."""
    if sorted_indices is not None:
        hx = m.permute_hidden(hx, sorted_indices)
    if not isinstance(hx, (tuple, list)):
        raise TypeError(f"lstm(): argument 'hx' must be tuple of Tensors, not {type(hx).__name__}")
    try:
        m.check_forward_args(data, hx, batch_sizes)
    except ValueError as e:
        raise RuntimeError(str(e)) from None
    if len(hx) != 2:
        raise RuntimeError(f"lstm expects two hidden states, got {len(hx)}")


def _check_op(x: Tensor, state: list[Tensor], weight: Tensor) -> None:
    """What torch's recurrent op checks after the module's own checks (all RuntimeError)."""
    if x.shape[0] == 0:
        raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
    for s in state:
        if s.device != x.device:
            raise RuntimeError("Input and hidden tensors are not at the same device, found input "
                               f"tensor at {x.device} and hidden tensor at {s.device}")
        if s.dtype != x.dtype:
            raise RuntimeError(f"hidden dtype ({s.dtype}) does not match input dtype ({x.dtype})")
    if weight.device != x.device:
        raise RuntimeError(f"Input and parameter tensors are not at the same device, found input "
                           f"tensor at {x.device} and parameter tensor at {weight.device}")
    if weight.dtype != x.dtype:
        raise RuntimeError(f"input dtype ({x.dtype}) does not match weight dtype ({weight.dtype})")


def _check_weights(x: Tensor, m: Any) -> None:
    """Every weight in the input's dtype and device. torch's op refuses a mix (RuntimeError, in
    words that differ by op and backend); the fused kernels would read such a weight converted,
    so a weight made float64 through ``.data`` would run where torch.nn raises."""
    names = getattr(m, "_flat_weights_names", None)  # (the int8 modules' stand-in has none)
    for name, w in zip(names or (), m._flat_weights):
        if w is not None and (w.dtype != x.dtype or w.device != x.device):
            raise RuntimeError(f"{name} is {w.dtype} on {w.device}, but the input is {x.dtype} "
                               f"on {x.device}: every weight must match the input")


def cell_args(cell: Any, input: Any, hx: Any, lstm: bool, tag: str) -> tuple[Tensor, list[Tensor], bool]:
    """torch.nn.{LSTM,GRU,RNN}Cell.forward's argument handling, then its op's checks; returns
    x (B, I), the state [h] or [h, c] (each (B, H)) and whether the call was unbatched."""
    if input.dim() not in (1, 2):
        raise ValueError(f"{tag}: Expected input to be 1D or 2D, got {input.dim()}D instead")
    if hx is not None and lstm:
        for idx, value in enumerate(hx):
            if value.dim() not in (1, 2):
                raise ValueError(f"{tag}: Expected hx[{idx}] to be 1D or 2D, got {value.dim()}D instead")
    elif hx is not None and hx.dim() not in (1, 2):
        raise ValueError(f"{tag}: Expected hidden to be 1D or 2D, got {hx.dim()}D instead")
    unbatched = input.dim() == 1
    x = input.unsqueeze(0) if unbatched else input
    if hx is None:  # torch.nn's zeros, then the same op checks as a given state (input vs weight)
        zeros = torch.zeros(x.size(0), cell.hidden_size, dtype=x.dtype, device=x.device)
        state = [zeros, zeros] if lstm else [zeros]
    elif lstm:
        if unbatched:
            state = [hx[0].unsqueeze(0), hx[1].unsqueeze(0)]
        elif not isinstance(hx, (tuple, list)):
            raise TypeError(f"lstm_cell(): argument 'hx' must be tuple of Tensors, not {type(hx).__name__}")
        else:
            state = list(hx)
        if len(state) != 2:
            raise RuntimeError(f"lstm_cell expects two hidden states, got {len(state)}")
    else:
        state = [hx.unsqueeze(0) if unbatched else hx]
    if x.size(1) != cell.input_size:
        raise RuntimeError(f"input has inconsistent input_size: got {x.size(1)} expected "
                           f"{cell.input_size}")
    for i, h in enumerate(state):
        if x.size(0) != h.size(0):
            raise RuntimeError(f"Input batch size {x.size(0)} doesn't match hidden{i} batch size "
                               f"{h.size(0)}")
        if h.dim() < 2:
            raise IndexError("Dimension out of range (expected to be in range of [-1, 0], but got 1)")
        if h.size(1) != cell.hidden_size:
            raise RuntimeError(f"hidden{i} has inconsistent hidden_size: got {h.size(1)}, expected "
                               f"{cell.hidden_size}")
    if h.dim() > 2:
        raise RuntimeError(f"{tag}: expected hidden state of 2 dimensions, got {h.dim()}")
    # torch's lstm_cell promotes a c of another dtype (c' = f ⊙ c + i ⊙ g): the caller hands such a
    # call to torch's op; h must match.
    _check_op(x.unsqueeze(0), [state[0].unsqueeze(0)], cell.weight_ih)
    return x, state, unbatched

# --- For the modules with no torch.nn twin (gatedrnn.modules.declared) -----------------------------
# torch.nn's classes validate through torch.nn itself (module_args, cell_args above). MinGRU,
# MinLSTM and SLSTM have no torch.nn constructor or forward to defer to, so these checks follow
# torch.nn.RNNBase's order and exception classes.


def check_constructor(
    name: str,
    input_size: Any,
    hidden_size: Any,
    num_layers: Any,
    bias: Any,
    batch_first: Any,
    dropout: Any,
    proj_size: Any,
    bidirectional: Any = False,
) -> tuple[int, int, int, float]:
    """torch.nn.RNNBase's constructor checks, in its order and with its exception classes (the
    truthiness of ``bidirectional``, ``float(dropout)``, then dropout, bias, batch_first, the sizes,
    ``range(num_layers)``), then ``check_op_args``: what torch.nn.GRU builds and runs, these build
    and run; what it refuses, at construction or at the first call, these refuse when built.

    The arguments are the caller's as given (hence Any): this is where they are checked. Returns
    (input_size, hidden_size, num_layers, dropout) as plain ints and a float."""
    bool(bidirectional)  # torch.nn reads it by truthiness first (a tensor of two: RuntimeError)
    dropout_value = float(dropout)
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Number) or \
            not 0 <= cast(float, dropout) <= 1:
        raise ValueError(
            "dropout should be a number in range [0, 1] representing the probability of an "
            f"element being zeroed, got {dropout!r}"
        )
    if cast(float, dropout) > 0 and num_layers == 1:
        warnings.warn(
            "dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
            f"expects num_layers greater than 1, but got dropout={dropout} and num_layers=1",
            stacklevel=4,
        )
    for arg, value in (("bias", bias), ("batch_first", batch_first)):
        if not isinstance(value, bool):
            raise TypeError(f"{arg} should be of type bool, got: {type(value).__name__}")
    for arg, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(value, int):  # (a bool is an int to torch.nn: True builds a size of 1)
            raise TypeError(f"{arg} should be of type int, got: {type(value).__name__}")
        if value <= 0:
            raise ValueError(f"{arg} must be greater than zero, got {value}")
    if num_layers <= 0:
        raise ValueError(f"num_layers must be greater than zero, got {num_layers}")
    if proj_size < 0:
        raise ValueError(
            f"proj_size should be a positive integer or zero to disable projections, got {proj_size}"
        )
    if proj_size >= hidden_size:
        raise ValueError(
            f"proj_size has to be smaller than hidden_size, got proj_size={proj_size} and "
            f"hidden_size={hidden_size}"
        )
    range(num_layers)  # torch.nn's layer loop: TypeError for a float
    check_op_args(name, num_layers, bidirectional)
    return int(input_size), int(hidden_size), operator.index(num_layers), dropout_value


def check_input(name: str, x: object, input_size: int, dtype: torch.dtype, packed: bool) -> None:
    """Rank, feature size, dtype and sequence length of the input."""
    if not isinstance(x, Tensor):
        raise InputTypeError(f"{name}: input must be a Tensor or PackedSequence, got "
                             f"{type(x).__name__}")
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


class InputTypeError(TypeError, AttributeError):
    """An input that is not a tensor (a list, a numpy array, None).

    torch.nn's modules raise AttributeError for it (``'list' object has no attribute 'dim'``);
    this class is that and a TypeError, so an ``except`` written for torch.nn still catches it,
    and the message says what was expected.
    """


class StateTypeError(TypeError, AttributeError, IndexError, RuntimeError):
    """hx of the wrong type: an LSTM given a tensor, or a GRU/RNN given a tuple.

    torch.nn raises IndexError, RuntimeError or AttributeError for these, depending on the shape it
    trips over first. This class is all of them and a TypeError, so every ``except`` written for
    torch.nn still catches it, and the message says what was expected.
    """


def from_config(config: dict[str, Any], classes: dict[str, Any]) -> Any:
    """``classes[config["type"]](**rest)``, the "dtype" string turned back into a torch dtype: the
    inverse of a module's ``get_config()``."""
    cfg = dict(config)
    kind = cfg.pop("type", None)
    if kind not in classes:
        raise ValueError(f"config 'type' must be one of {sorted(classes)}, got {kind!r}")
    dtype = cfg.pop("dtype", None)
    if dtype is not None:
        if not isinstance(getattr(torch, str(dtype), None), torch.dtype):
            raise ValueError(f"config 'dtype' is not a torch dtype: {dtype!r}")
        cfg["dtype"] = getattr(torch, dtype)
    return classes[kind](**cfg)


def autocast_on(device_type: str) -> bool:
    """Whether autocast is on for tensors of ``device_type`` (False for a device autocast does
    not know, such as "meta", where torch.is_autocast_enabled raises)."""
    if not torch._C._is_any_autocast_enabled():
        return False
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:
        return False
