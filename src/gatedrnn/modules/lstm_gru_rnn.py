"""Drop-in ``LSTM``, ``GRU`` and ``RNN``: torch.nn's classes (subclasses of them), gatedrnn's engines
and variants.

Parameter names, shapes, gate order and default initialisation are torch.nn's, so ``state_dict``s
load both ways (with ``num_heads`` > 1, weight_hh is head-wise: see ``LSTM``). The equations are in
``gatedrnn.equations.cells``; the shared forward in ``gatedrnn.modules.base``; the machinery mixed
into torch's classes in ``gatedrnn.modules.recurrent``.

Example:
    >>> import torch, gatedrnn
    >>> lstm = gatedrnn.LSTM(10, 20, num_layers=2)
    >>> isinstance(lstm, torch.nn.LSTM)
    True
    >>> ref = torch.nn.LSTM(10, 20, num_layers=2)
    >>> _ = ref.load_state_dict(lstm.state_dict())
    >>> x = torch.randn(5, 3, 10)
    >>> torch.allclose(lstm(x)[0], ref(x)[0], atol=1e-5)
    True
    >>> lstm.last_engine in ("native", "fused")
    True
"""

from __future__ import annotations

from typing import Any

from torch import nn

from . import checks
from .declared import CLASSES
from .recurrent import OPTIONS, RNNBase
from .scripting import ScriptLSTM, ScriptRNN

# Imported for their registration in ``declared.CLASSES`` (from_config finds them there).
from . import minimal, slstm  # noqa: E402, F401  isort: skip


class LSTM(RNNBase, ScriptLSTM, nn.LSTM):
    """Drop-in ``torch.nn.LSTM`` (a subclass of it): a multi-layer LSTM over a sequence.

    For each step t, each layer computes from its input x = x_t and the state h = h_{t−1},
    c = c_{t−1} (``gatedrnn.equations.cells.lstm_cell``; gates i|f|g|o, torch.nn's order)::

        a = W_ih x + b_ih + W_hh (m ⊙ h) + b_hh          (B, 4H); m is the recurrent dropout mask,
          W_hh (m ⊙ h) dense or head-wise (``headwise_product``)
          with layer_norm: a = LN_x(W_ih x) + LN_h(W_hh (m ⊙ h)) + b_ih + b_hh
        i = σ(a_i + P_i ⊙ c)        input gate      (P: peepholes, Gers & Schmidhuber 2000)
        f = σ(a_f + P_f ⊙ c)        forget gate
        g = tanh(a_g)               candidate
        c' = f ⊙ c + i ⊙ g          cell
        o = σ(a_o + P_o ⊙ c')       output gate (peeks at the new cell)
        h' = o ⊙ tanh(c')           with layer_norm: o ⊙ tanh(LN_c(c'))
        h' = W_hr h'                with a projection (proj_size > 0)
        zoneout: h' = d_h ⊙ h + (1 − d_h) ⊙ h',  c' = d_c ⊙ c + (1 − d_c) ⊙ c'

    σ is the sigmoid and ⊙ the elementwise product. Without options (m = 1, no P, no layer norm,
    no zoneout) these are torch.nn.LSTM's equations. Layer k > 0 reads layer k − 1's output h
    (with ``dropout`` in training); h_0 and c_0 start each layer and direction.

    Args:
        input_size: H_in, the features of each input step.
        hidden_size: H_cell, the features of the cell state (and of h unless ``proj_size``).
        num_layers: stacked layers; layer k > 0 reads layer k − 1's output.
        bias: whether the layers have bias_ih and bias_hh.
        batch_first: input and output as (N, L, ·) instead of (L, N, ·); not the state.
        dropout: dropout on the outputs of every layer but the last, in training.
        bidirectional: a second direction per layer, reading the sequence backwards.
        proj_size: H_out > 0 projects h to H_out features (weight_hr); 0 for none.
        device: where the parameters are created.
        dtype: their dtype.
        engine: "auto" (the measured table of ``gatedrnn.engines.dispatch``), "fused" (numba,
            CPU), "triton" (Triton kernels, CUDA; ``gatedrnn[gpu]``), "reference" (the equations
            under autograd) or "native" (torch's own op).
        layer_norm: layer normalisation of W_ih x, W_hh h and c (Ba et al. 2016).
        peephole: peephole connections from c to i, f, o (Gers & Schmidhuber 2000).
        recurrent_dropout: dropout on h in the recurrence, one mask per sequence (Gal &
            Ghahramani 2016); in training.
        zoneout: probability that a unit of h keeps its previous value (Krueger et al. 2016).
        zoneout_cell: the same for c.
        weight_drop: DropConnect on weight_hh in training (Merity et al. 2017).
        forget_bias: a constant added to the forget gate's bias at initialisation (None: none).
        init: "torch" (U(−1/√H, 1/√H)), "orthogonal" or "chrono" (Tallec & Ollivier 2018).
        chrono_max_len: the longest dependency to expect, for ``init="chrono"``.
        num_heads: nh > 1 makes the recurrence head-wise (block-diagonal): H splits into nh blocks
            of d = H / nh units whose gates see only their own block of h. Not with proj_size.

    Inputs:
        input, hx, return_gates

        - **input**: (L, H_in) unbatched, (L, N, H_in), (N, L, H_in) with ``batch_first``, or a
          ``PackedSequence`` of such a sequence.
        - **hx**: ``(h_0, c_0)`` or None (zeros): h_0 (D·num_layers, N, H_out), c_0
          (D·num_layers, N, H_cell); without the N axis for an unbatched input. D = 2 if
          bidirectional else 1, H_out = proj_size or hidden_size.
        - **return_gates**: also return the activated gates of every step.

    Outputs:
        output, (h_n, c_n)[, gates]

        - **output**: (L, N, D·H_out), (N, L, D·H_out) with ``batch_first``, (L, D·H_out)
          unbatched, or a ``PackedSequence`` for a packed input: h of the last layer at every
          step, the two directions concatenated: the forward direction's H_out features, then
          the reverse one's. ``output.view(L, N, 2, H_out)`` (``(N, L, 2, H_out)`` with
          ``batch_first``) splits them, index 0 forward and 1 reverse; the forward direction ends
          at step L − 1, the reverse one at step 0.
        - **h_n**, **c_n**: the final states, shaped as h_0 and c_0; their first axis is
          layer·D + direction, so ``h_n.view(num_layers, D, N, H_out)`` separates layers and
          directions.
        - **gates** (with ``return_gates``): a dict with keys "input", "forget", "candidate",
          "output", "cell", each (D·num_layers, L, N, H_cell); (D·num_layers, L, H_cell)
          unbatched; zeros past a packed sequence's end.

    Attributes:
        engine (str): The engine setting, as the argument; a plain attribute, change it at any time.
        last_engine (str | None): The engine that ran the last call ("native", "fused", "fused-float32",
            "triton" or "reference"); None before the first.
        weight_ih_l{k} (Tensor): (4·H_cell, H_in) for k = 0, else (4·H_cell, D·H_out), rows i|f|g|o.
            The reverse direction's parameters have the suffix ``_reverse``, as torch.nn's.
        weight_hh_l{k} (Tensor): (4·H_cell, H_out), or (nh, 4d, d) with num_heads = nh > 1 (head j's rows
            stacked per gate).
        bias_ih_l{k} (Tensor): (4·H_cell), with ``bias``.
        bias_hh_l{k} (Tensor): (4·H_cell), with ``bias``.
        weight_hr_l{k} (Tensor): (H_out, H_cell), with ``proj_size`` > 0.
        layer_norm_x_weight_l{k} (Tensor): With ``layer_norm``: ``layer_norm_{x,h}_{weight,bias}_l{k}``
            (4·H_cell) and ``layer_norm_c_{weight,bias}_l{k}`` (H_cell); gains start at 1,
            biases at 0.
        weight_peephole_l{k} (Tensor): (3, H_cell), rows i, f, o, with ``peephole``.

    Every weight and bias starts at U(−1/√H_cell, 1/√H_cell), as torch.nn's, unless ``init`` or
    ``forget_bias`` say otherwise.

    Raises:
        ValueError: At construction: an option out of its range, an unknown ``engine`` or
            ``init``, a ``num_heads`` that does not divide ``hidden_size`` or comes with
            ``proj_size`` (torch.nn's checks and messages for torch.nn's arguments). At a call:
            an input that is not 2-D or 3-D (as torch.nn), or ``engine="native"`` with a variant
            or ``return_gates`` (torch has no op for them).
        TypeError: At construction: an option of another class (``reset_after`` here), or an
            argument of a type torch.nn refuses.
        RuntimeError: At a call: an input or a state whose size, batch or device does not match
            the module (torch.nn's checks and messages), or a forced engine that cannot run the
            call (``"fused"`` off the CPU, ``"triton"`` without CUDA).

    Engines:
        ``engine="auto"`` picks per call from a measured table: torch's op ("native": cuDNN on a
        GPU, oneDNN for some float32 LSTM calls on the CPU) where it is the fastest and computes
        the call; the fused numba kernels on the CPU otherwise, bfloat16/float16 computed in
        float32 ("fused-float32"); on CUDA, what cuDNN has no op for (a variant, num_heads > 1,
        ``return_gates``) runs the Triton kernels ("triton") where triton is installed, the
        reference engine otherwise (the GPU choices are planned from the design: their speed is
        not yet measured). ``last_engine`` names the engine of the last call. Engines agree to about 1e-6
        in float32 (1e-12 in float64), not bit for bit; each is deterministic on one machine
        whatever the thread count (the fused kernels split rows, never a sum, across threads), so
        fix ``engine=`` for bitwise reproducible runs. numba compiles the fused kernels on their
        first call (seconds) and caches them on disk (numba's ``cache=True``: beside the package,
        or in ``NUMBA_CACHE_DIR``), so later processes start fast.

    Example:
        >>> import torch, gatedrnn
        >>> lstm = gatedrnn.LSTM(3, 8, num_layers=2, batch_first=True, layer_norm=True)
        >>> out, (h, c), gates = lstm(torch.randn(4, 5, 3), return_gates=True)
        >>> out.shape, h.shape, gates["forget"].shape
        (torch.Size([4, 5, 8]), torch.Size([2, 4, 8]), torch.Size([2, 5, 4, 8]))
        >>> gatedrnn.LSTM(3, 8, num_heads=2).weight_hh_l0.shape
        torch.Size([2, 16, 4])

        Both directions of a bidirectional output, and of its final state:

        >>> bi = gatedrnn.LSTM(3, 8, num_layers=2, bidirectional=True)
        >>> out, (h_n, c_n) = bi(torch.randn(5, 4, 3))  # (L, N, 2·H), (2·2, N, H)
        >>> forward, reverse = out.view(5, 4, 2, 8).unbind(2)  # each (L, N, H)
        >>> h_n = h_n.view(2, 2, 4, 8)  # (num_layers, D, N, H)
        >>> torch.equal(forward[-1], h_n[-1, 0]), torch.equal(reverse[0], h_n[-1, 1])
        (True, True)
    """

    _TORCH = nn.LSTM
    _ACCEPTS = tuple(k for k in OPTIONS if k != "reset_after")

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device: Any = None, dtype: Any = None, *, engine: str = "auto",
                 layer_norm: bool = False, peephole: bool = False, recurrent_dropout: float = 0.0,
                 zoneout: float = 0.0, zoneout_cell: float = 0.0, weight_drop: float = 0.0,
                 forget_bias: float | None = None, init: str = "torch",
                 chrono_max_len: int | None = None, num_heads: int = 1) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device, dtype, engine=engine,
                         layer_norm=layer_norm, peephole=peephole,
                         recurrent_dropout=recurrent_dropout, zoneout=zoneout,
                         zoneout_cell=zoneout_cell, weight_drop=weight_drop,
                         forget_bias=forget_bias, init=init, chrono_max_len=chrono_max_len,
                         num_heads=num_heads)


class GRU(RNNBase, ScriptRNN, nn.GRU):
    """Drop-in ``torch.nn.GRU`` (a subclass of it): a multi-layer GRU over a sequence.

    For each step t, each layer computes from its input x = x_t and the state h = h_{t−1}
    (``gatedrnn.equations.cells.gru_cell``; gates r|z|n, torch.nn's order)::

        u = W_ih x + b_ih                       (B, 3H); with layer_norm LN_x(W_ih x) + b_ih
        reset_after=True (torch.nn, cuDNN, Keras' default):
            v = W_hh (m ⊙ h) + b_hh             (B, 3H); with layer_norm LN_h(W_hh (m ⊙ h)) + b_hh
            r = σ(u_r + v_r)                    reset gate
            z = σ(u_z + v_z)                    update gate
            n = tanh(u_n + r ⊙ v_n)             candidate
        reset_after=False (Cho et al. 2014, Keras reset_after=False):
            r = σ(u_r + W_hr (m ⊙ h) + b_hr),  z = σ(u_z + W_hz (m ⊙ h) + b_hz)
            n = tanh(u_n + W_hn (r ⊙ (m ⊙ h)) + b_hn)
        h' = (1 − z) ⊙ n + z ⊙ h
        zoneout: h' = d ⊙ h + (1 − d) ⊙ h'

    σ is the sigmoid, ⊙ the elementwise product and m the recurrent dropout mask. Without options
    (m = 1, reset_after=True, no layer norm, no zoneout) these are torch.nn.GRU's equations. Layer
    k > 0 reads layer k − 1's output h (with ``dropout`` in training).

    Args:
        input_size: H_in, the features of each input step.
        hidden_size: H, the features of h.
        num_layers: stacked layers; layer k > 0 reads layer k − 1's output.
        bias: whether the layers have bias_ih and bias_hh.
        batch_first: input and output as (N, L, ·) instead of (L, N, ·); not the state.
        dropout: dropout on the outputs of every layer but the last, in training.
        bidirectional: a second direction per layer, reading the sequence backwards.
        device: where the parameters are created.
        dtype: their dtype.
        engine: "auto", "fused", "triton", "reference" or "native" (see ``LSTM``).
        reset_after: True is torch.nn's and cuDNN's GRU (the reset gate after W_hh h); False is
            Cho et al. 2014's original (Keras' ``reset_after=False``).
        layer_norm: layer normalisation of W_ih x and W_hh h (needs reset_after=True).
        recurrent_dropout: dropout on h in the recurrence, one mask per sequence; in training.
        zoneout: probability that a unit of h keeps its previous value.
        weight_drop: DropConnect on weight_hh in training.
        forget_bias: a constant added to the update gate's bias at initialisation (None: none).
        init: "torch", "orthogonal" or "chrono".
        chrono_max_len: the longest dependency to expect, for ``init="chrono"``.
        num_heads: nh > 1 makes the recurrence head-wise (block-diagonal), as ``LSTM``'s.

    Inputs:
        input, hx, return_gates

        - **input**: (L, H_in) unbatched, (L, N, H_in), (N, L, H_in) with ``batch_first``, or a
          ``PackedSequence``.
        - **hx**: h_0 (D·num_layers, N, H) or None (zeros); (D·num_layers, H) unbatched.
        - **return_gates**: also return the activated gates of every step.

    Outputs:
        output, h_n[, gates]

        - **output**: (L, N, D·H), (N, L, D·H) with ``batch_first``, (L, D·H) unbatched, or a
          ``PackedSequence`` for a packed input; bidirectional: ``output.view(L, N, 2, H)``
          splits the directions (index 0 forward, 1 reverse), as ``LSTM``'s.
        - **h_n**: the final state, shaped as h_0; ``h_n.view(num_layers, D, N, H)`` separates
          layers and directions.
        - **gates** (with ``return_gates``): keys "reset", "update", "candidate", each
          (D·num_layers, L, N, H); (D·num_layers, L, H) unbatched.

    Attributes:
        engine (str): The engine setting, as the argument; a plain attribute, change it at any time.
        last_engine (str | None): The engine that ran the last call ("native", "fused", "fused-float32",
            "triton" or "reference"); None before the first.
        weight_ih_l{k} (Tensor): (3H, H_in) for k = 0, else (3H, D·H), rows r|z|n. The reverse
            direction's parameters have the suffix ``_reverse``, as torch.nn's.
        weight_hh_l{k} (Tensor): (3H, H), or (nh, 3d, d) with num_heads = nh > 1.
        bias_ih_l{k} (Tensor): (3H), with ``bias``.
        bias_hh_l{k} (Tensor): (3H), with ``bias``.
        layer_norm_x_weight_l{k} (Tensor): With ``layer_norm``: ``layer_norm_{x,h}_{weight,bias}_l{k}``
            (3H); gains start at 1, biases at 0.

    Every weight and bias starts at U(−1/√H, 1/√H), as torch.nn's, unless ``init`` or
    ``forget_bias`` say otherwise.

    Raises:
        ValueError: At construction: an option out of its range, an unknown ``engine`` or
            ``init``, ``layer_norm`` with ``reset_after=False``, a ``num_heads`` that does not
            divide ``hidden_size``. At a call: an input that is not 2-D or 3-D, or
            ``engine="native"`` with a variant, ``reset_after=False`` or ``return_gates``.
        TypeError: At construction: an option of another class (``peephole`` here), or an
            argument of a type torch.nn refuses.
        RuntimeError: At a call: an input or a state whose size, batch or device does not match
            the module (torch.nn's checks and messages), or a forced engine that cannot run the
            call.

    Engines:
        As ``LSTM``'s: torch's op where the table measured it fastest, the fused kernels on the
        CPU otherwise, on CUDA the Triton kernels for what cuDNN lacks (GRU only; the Elman RNN has
        none), the reference engine elsewhere; ``last_engine`` says which ran.
        Deterministic per engine on one machine; numba compiles on first use and caches on disk.

    Example:
        >>> import torch, gatedrnn
        >>> gru = gatedrnn.GRU(3, 5, reset_after=False)
        >>> out, h = gru(torch.randn(7, 3))  # unbatched
        >>> out.shape, h.shape
        (torch.Size([7, 5]), torch.Size([1, 5]))
    """

    _TORCH = nn.GRU
    _ACCEPTS = tuple(k for k in OPTIONS if k not in ("peephole", "zoneout_cell"))

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device: Any = None, dtype: Any = None, *, engine: str = "auto",
                 reset_after: bool = True, layer_norm: bool = False,
                 recurrent_dropout: float = 0.0, zoneout: float = 0.0, weight_drop: float = 0.0,
                 forget_bias: float | None = None, init: str = "torch",
                 chrono_max_len: int | None = None, num_heads: int = 1) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype, engine=engine,
                         reset_after=reset_after, layer_norm=layer_norm,
                         recurrent_dropout=recurrent_dropout, zoneout=zoneout,
                         weight_drop=weight_drop, forget_bias=forget_bias, init=init,
                         chrono_max_len=chrono_max_len, num_heads=num_heads)


class RNN(RNNBase, ScriptRNN, nn.RNN):
    """Drop-in ``torch.nn.RNN`` (a subclass of it): the Elman RNN, tanh or relu, the ungated
    baseline.

    For each step t, each layer computes from its input x = x_t and the state h = h_{t−1}
    (``gatedrnn.equations.cells.rnn_cell``; m = 1, this class has no recurrent dropout)::

        h' = φ(W_ih x + b_ih + W_hh (m ⊙ h) + b_hh),   φ = tanh (mode "rnn_tanh") or relu

    Args:
        input_size: H_in, the features of each input step.
        hidden_size: H, the features of h.
        num_layers: stacked layers.
        nonlinearity: "tanh" or "relu".
        bias: whether the layers have bias_ih and bias_hh.
        batch_first: input and output as (N, L, ·) instead of (L, N, ·); not the state.
        dropout: dropout on the outputs of every layer but the last, in training.
        bidirectional: a second direction per layer, reading the sequence backwards.
        device: where the parameters are created.
        dtype: their dtype.
        engine: "auto", "fused", "reference" or "native" (see ``LSTM``).

    Inputs:
        input, hx, return_gates

        - **input**: (L, H_in) unbatched, (L, N, H_in), (N, L, H_in) with ``batch_first``, or a
          ``PackedSequence``.
        - **hx**: h_0 (D·num_layers, N, H) or None (zeros); (D·num_layers, H) unbatched.
        - **return_gates**: accepted for symmetry; the RNN has no gates (an empty dict).

    Outputs:
        output, h_n[, gates]

        - **output**: (L, N, D·H), (N, L, D·H) with ``batch_first``, (L, D·H) unbatched, or a
          ``PackedSequence`` for a packed input; bidirectional: ``output.view(L, N, 2, H)``
          splits the directions (index 0 forward, 1 reverse), as ``LSTM``'s.
        - **h_n**: the final state, shaped as h_0; ``h_n.view(num_layers, D, N, H)`` separates
          layers and directions.
        - **gates** (with ``return_gates``): ``{}``.

    Attributes:
        engine (str): The engine setting, as the argument; a plain attribute, change it at any time.
        last_engine (str | None): The engine that ran the last call ("native", "fused", "fused-float32" or
            "reference"); None before the first.
        weight_ih_l{k} (Tensor): (H, H_in) for k = 0, else (H, D·H). The reverse direction's parameters
            have the suffix ``_reverse``, as torch.nn's.
        weight_hh_l{k} (Tensor): (H, H).
        bias_ih_l{k} (Tensor): (H), with ``bias``.
        bias_hh_l{k} (Tensor): (H), with ``bias``. All start at U(−1/√H, 1/√H), as torch.nn's.

    Raises:
        ValueError: At construction: an unknown ``nonlinearity`` or ``engine``, an option out of
            its range (torch.nn's checks and messages). At a call: an input that is not 2-D or
            3-D, or ``engine="native"`` with ``return_gates``.
        TypeError: At construction: an option of the gated classes (``layer_norm``, say), or an
            argument of a type torch.nn refuses.
        RuntimeError: At a call: an input or a state whose size, batch or device does not match
            the module (torch.nn's checks and messages), or a forced engine that cannot run the
            call.

    Engines:
        As ``LSTM``'s: torch's op where the table measured it fastest, the fused kernels on the
        CPU otherwise, on CUDA the Triton kernels for what cuDNN lacks (GRU only; the Elman RNN has
        none), the reference engine elsewhere; ``last_engine`` says which ran.

    Example:
        >>> import torch, gatedrnn
        >>> rnn = gatedrnn.RNN(3, 4, 2, "relu", bidirectional=True)
        >>> out, h = rnn(torch.randn(6, 2, 3))
        >>> out.shape, h.shape
        (torch.Size([6, 2, 8]), torch.Size([4, 2, 4]))
    """

    _TORCH = nn.RNN
    _ACCEPTS = ("engine",)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, device: Any = None,
                 dtype: Any = None, *, engine: str = "auto") -> None:
        # device and dtype by keyword: torch.nn.RNN drops nonlinearity from its positional
        # arguments, so a positional device would land in proj_size's place.
        super().__init__(input_size, hidden_size, num_layers, nonlinearity, bias, batch_first,
                         dropout, bidirectional, device=device, dtype=dtype, engine=engine)


def from_config(config: dict[str, Any]) -> Any:
    """Build a module from ``module.get_config()``; the inverse of get_config (every gatedrnn
    module: LSTM, GRU, RNN, MinGRU, MinLSTM, SLSTM).

    Example:
        >>> import gatedrnn
        >>> gatedrnn.from_config(gatedrnn.GRU(3, 5, reset_after=False).get_config())
        GRU(3, 5, reset_after=False)
    """
    return checks.from_config(config, {"LSTM": LSTM, "GRU": GRU, "RNN": RNN, **CLASSES})
