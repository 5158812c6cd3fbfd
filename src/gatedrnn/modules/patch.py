"""``gatedrnn.patch_torch()``: code that builds ``torch.nn.LSTM`` builds ``gatedrnn.LSTM``.

Third-party code (a forecasting library, a speech toolkit, a research repository) writes
``nn.LSTM(...)`` itself. ``patch_torch(**defaults)`` puts, for each of the six names ``LSTM``,
``GRU``, ``RNN``, ``LSTMCell``, ``GRUCell``, ``RNNCell``, a stand-in class in ``torch.nn``,
``torch.nn.modules`` and ``torch.nn.modules.rnn``:

- Calling the stand-in builds gatedrnn's class itself, ``defaults`` filled in for the options that
  class accepts: ``type(torch.nn.LSTM(3, 4)) is gatedrnn.LSTM``, so a module pickled while patched
  names ``gatedrnn.LSTM`` and unpickles with or without the patch.
- Pickles: gatedrnn's nine module classes are admitted to ``torch.load``'s weights_only unpickler
  when gatedrnn is imported (``SAFE_CLASSES``), so a model saved while patched loads wherever the
  program lists torch's classes in ``torch.serialization.safe_globals``. The stand-in carries
  torch's name (``torch.nn.modules.rnn.LSTM``), so a model torch.nn saved loads under the patch,
  with weights_only or without, as gatedrnn's class (its options at their defaults).
- ``isinstance(m, torch.nn.LSTM)`` asks torch's class: true for torch's modules and gatedrnn's
  alike, patched or not.
- A class defined while patched (``class X(Mixin, nn.LSTM)``) derives from the stand-in, hence from
  gatedrnn's class and torch's; it gets the defaults of the patch in force when it is built.

``unpatch_torch()`` puts torch's classes back; the object ``patch_torch`` returns is also a
context manager that restores, at the end of its block, what was there before it (so patches
nest). gatedrnn never reaches torch's classes through these names at call time: its classes hold
torch's in ``_TORCH`` and the rest of the package reads ``TORCH_CLASSES`` below.

Example:
    >>> import torch, gatedrnn
    >>> with gatedrnn.patch_torch(engine="reference"):
    ...     lstm = torch.nn.LSTM(3, 4)
    >>> type(lstm) is gatedrnn.LSTM, lstm.engine, isinstance(lstm, torch.nn.LSTM)
    (True, 'reference', True)
    >>> torch.nn.LSTM is gatedrnn.modules.patch.TORCH_CLASSES["LSTM"]  # restored
    True
"""

from __future__ import annotations

from abc import ABCMeta
from typing import Any

import torch.nn
import torch.nn.modules
import torch.nn.modules.rnn
import torch.serialization

from ..engines import dispatch
from . import checks
from .lstm_gru_rnn import GRU, LSTM, RNN
from .minimal import MinGRU, MinLSTM
from .recurrent import OPTIONS
from .rnn_cells import GRUCell, LSTMCell, RNNCell
from .slstm import SLSTM

OURS: dict[str, type] = {"LSTM": LSTM, "GRU": GRU, "RNN": RNN, "LSTMCell": LSTMCell,
                         "GRUCell": GRUCell, "RNNCell": RNNCell}
# torch's own classes, taken when gatedrnn is imported (before any patch).
TORCH_CLASSES: dict[str, type] = {name: cls._TORCH for name, cls in OURS.items()}  # type: ignore[attr-defined]
_NAMESPACES = (torch.nn, torch.nn.modules, torch.nn.modules.rnn)
_STACK: list[Patch] = []  # the patches in force, innermost last

# torch.load's weights_only unpickler (torch >= 2.6's default) builds only the classes a program
# lists in safe_globals, found by ``module.qualname``; a program lists torch's classes, and a model
# saved while patched names gatedrnn's. So gatedrnn's own module classes are admitted here, and
# nothing else: their pickled state holds only what the unpickler takes (tensors, parameters,
# OrderedDicts, a set, str/int/float/bool/None; tests/test_pickling.py checks every option). Each
# is added with its path, as a (class, path) pair, so that a program's own
# ``with safe_globals([LSTM])`` block, which removes what it listed when it ends, does not take
# gatedrnn's admission with it.
SAFE_CLASSES: tuple[type, ...] = (LSTM, GRU, RNN, LSTMCell, GRUCell, RNNCell, MinGRU, MinLSTM,
                                  SLSTM)
torch.serialization.add_safe_globals([(cls, f"{cls.__module__}.{cls.__qualname__}")
                                      for cls in SAFE_CLASSES])


class _StandIn(ABCMeta):
    """The stand-ins' metaclass: calling a stand-in builds gatedrnn's class; ``isinstance``/
    ``issubclass`` against a stand-in ask torch's class (a class derived from a stand-in answers
    as any class does). ABCMeta's subclass, so that a class mixing an ``abc.ABC`` in
    (pytorch-forecasting's pattern) has no metaclass conflict."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls.__dict__.get("_torch_class"):  # torch.nn.LSTM(...): gatedrnn's class itself
            ours: Any = cls.__dict__["_ours"]
            return ours(*args, **_with_defaults(ours, kwargs))
        return super().__call__(*args, **kwargs)  # a subclass defined while patched

    def __instancecheck__(cls, obj: Any) -> bool:
        torch_cls = cls.__dict__.get("_torch_class")
        return isinstance(obj, torch_cls) if torch_cls else super().__instancecheck__(obj)

    def __subclasscheck__(cls, sub: Any) -> bool:
        torch_cls = cls.__dict__.get("_torch_class")
        return issubclass(sub, torch_cls) if torch_cls else super().__subclasscheck__(sub)


def _with_defaults(ours: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """kwargs, plus the defaults of the patch in force for the options ``ours`` accepts."""
    defaults = _STACK[-1].defaults if _STACK else {}
    accepted = ours._ACCEPTS  # type: ignore[attr-defined]
    return {**{k: v for k, v in defaults.items() if k in accepted}, **kwargs}


def _stand_in(name: str) -> type:
    ours: Any = OURS[name]  # (a torch.nn subclass; Any: its __new__ and __init__ are called as such)

    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
        if cls.__dict__.get("_torch_class"):
            # Reached only by unpickling (a call goes through _StandIn.__call__): a file naming
            # torch.nn.modules.rnn.LSTM, loaded while patched, comes back as gatedrnn's class,
            # whose options read their class defaults (recurrent.option_defaults).
            return ours.__new__(ours)
        return ours.__new__(cls)  # a subclass defined while patched: built as any class

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        ours.__init__(self, *args, **_with_defaults(ours, kwargs))

    # torch's module and name: a program lists ``torch.nn.LSTM`` in safe_globals to admit the
    # GLOBAL ``torch.nn.modules.rnn.LSTM`` of a file torch.nn saved; while patched that name is
    # this stand-in, which admits the same GLOBAL only if it carries the same path.
    namespace = {"__new__": __new__, "__init__": __init__, "__doc__": ours.__doc__,
                 "__module__": TORCH_CLASSES[name].__module__, "__qualname__": name,
                 "_torch_class": TORCH_CLASSES[name], "_ours": ours}
    return _StandIn(name, (ours,), namespace)


class Patch:
    """One ``patch_torch`` call: what it replaced, so that it can put it back."""

    def __init__(self, defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        self.saved = [(ns, name, ns.__dict__[name]) for ns in _NAMESPACES for name in OURS
                      if name in ns.__dict__]
        stand_ins = {name: _stand_in(name) for name in OURS}
        for ns, name, _ in self.saved:
            setattr(ns, name, stand_ins[name])
        _STACK.append(self)

    def restore(self) -> None:
        """Put back what this patch replaced (and forget the patches made inside it)."""
        if self not in _STACK:
            return  # already restored (by unpatch_torch, or an outer block)
        del _STACK[_STACK.index(self):]
        for ns, name, previous in self.saved:
            setattr(ns, name, previous)

    def __enter__(self) -> Patch:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restore()


def patch_torch(**defaults: Any) -> Patch:
    """Make ``torch.nn.LSTM/GRU/RNN/LSTMCell/GRUCell/RNNCell`` build gatedrnn's classes.

    Args:
        **defaults: gatedrnn keyword-only options (``engine``, ``reset_after``, ``layer_norm``,
            ...) given to every module built through torch.nn's names while the patch is in
            force, each to the classes that accept it (``reset_after`` to GRU and GRUCell only;
            ``engine`` to all six). Arguments the caller passes win over them.

    Returns:
        The patch, already in force; as a context manager it restores, at the end of the
            block, the classes that were there before (even when the block raises).

    Raises:
        TypeError: an option name gatedrnn does not know.
        ValueError: an option value the modules would refuse (checked here, not at the first
            build).

    Example:
        >>> import torch, gatedrnn
        >>> with gatedrnn.patch_torch(engine="fused", reset_after=False):
        ...     gru, cell = torch.nn.GRU(3, 4), torch.nn.LSTMCell(3, 4)
        >>> gru.engine, gru.reset_after, cell.engine
        ('fused', False, 'fused')
        >>> type(gru) is gatedrnn.GRU, torch.nn.GRU is gatedrnn.GRU
        (True, False)
    """
    unknown = sorted(set(defaults) - set(OPTIONS))
    if unknown:
        raise TypeError(f"patch_torch() got unexpected option(s) {', '.join(unknown)}; gatedrnn's "
                        f"options are {', '.join(OPTIONS)}")
    checks.check_options({**OPTIONS, **defaults}, dispatch.ENGINES, gru=True)
    return Patch(dict(defaults))


def unpatch_torch() -> None:
    """Put torch's own classes back in ``torch.nn``, undoing every ``patch_torch`` in force."""
    if _STACK:
        _STACK[0].restore()
