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
import warnings
from dataclasses import dataclass
from typing import Any, cast

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
    if out["init"] == "chrono" and (cml is None or cml < 3):
        raise ValueError("init='chrono' needs chrono_max_len >= 3, the longest dependency to "
                         f"expect; got {cml!r}")
    if gru and out["layer_norm"] and not out["reset_after"]:
        raise ValueError(
            "layer_norm=True needs reset_after=True: with reset_after=False the candidate's "
            "recurrent product depends on the reset gate, so there is no one W_hh h to normalise"
        )
    return out


def check_sizes(name: str, bidirectional: Any = False, **sizes: Any) -> None:
    """Integer sizes that are ints and not bools, and a ``bidirectional`` that is a bool.

    torch.nn's constructors take ``hidden_size=True`` (an int to ``isinstance``) and store
    ``bidirectional="no"`` as given, reading it by truthiness: "no" builds two directions. Its
    ``_VF`` op refuses a non-bool bidirectional or num_layers at the call, with a TypeError;
    gatedrnn refuses them all when the module is built, with the same class (``name`` is the
    class's, for the message)."""
    for arg, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name}: {arg} should be of type int, got: {type(value).__name__}")
    if not isinstance(bidirectional, bool):
        raise TypeError(f"{name}: bidirectional should be of type bool, got: "
                        f"{type(bidirectional).__name__}")


def check_module(m: Any) -> None:
    """``check_sizes`` on a built torch.nn-style module (LSTM, GRU, RNN): its stored arguments."""
    check_sizes(type(m).__name__, m.bidirectional, input_size=m.input_size,
                hidden_size=m.hidden_size, num_layers=m.num_layers,
                proj_size=getattr(m, "proj_size", 0))


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
    return ModuleArgs(x, state, batch_sizes, lengths, unsorted, unbatched)


def packed_lstm_state(m: Any, data: Tensor, batch_sizes: Tensor, hx: Any) -> None:
    """The checks torch.nn.LSTM skips for a packed input (raising RuntimeError, as its op does
    for most of them). Without them torch's op reads past a c_0 with too few layers and the
    process dies (torch 2.13: a segmentation fault), so the native engine runs them too."""
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
) -> None:
    """Constructor checks, in torch.nn.RNNBase's order and with its exception classes, then a
    ``bidirectional`` that is a bool (see ``check_sizes``).

    The arguments are the caller's as given (hence Any): this is where they are checked."""
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Number) or \
            not 0 <= cast(float, dropout) <= 1:
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
    check_sizes(name, bidirectional)
    if cast(float, dropout) > 0 and num_layers == 1:
        warnings.warn(
            "dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
            f"expects num_layers greater than 1, but got dropout={dropout} and num_layers=1",
            stacklevel=4,
        )


def check_input(name: str, x: object, input_size: int, dtype: torch.dtype, packed: bool) -> None:
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
