"""Keras 3 ↔ gatedrnn: converted layers compute what the originals compute, both ways.

The oracle is Keras itself (torch backend) running the layer: outputs and final states must match
to 1e-5, in particular for the GRU, whose gate order and biases are the known trap.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported, by this or any module

from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import gatedrnn  # noqa: E402

keras = pytest.importorskip("keras")
from gatedrnn.interop.keras import from_keras, to_keras  # noqa: E402

I = 3  # noqa: E741


def keras_layer(kind: str, units: int, bidirectional: bool, **kw: Any) -> Any:
    """A built Keras layer with random weights, biases included (Keras initialises them to zero)."""
    layer = getattr(keras.layers, kind)(units, return_sequences=True, return_state=True, **kw)
    if bidirectional:
        layer = keras.layers.Bidirectional(layer)
    layer.build((None, None, I))
    rng = np.random.default_rng(0)
    layer.set_weights([rng.normal(0, 0.5, w.shape).astype(w.dtype) for w in layer.get_weights()])
    return layer


def run_keras(layer: Any, x: np.ndarray, initial_state: list[np.ndarray] | None = None) -> list[np.ndarray]:
    out = layer(x, initial_state=initial_state) if initial_state is not None else layer(x)
    return [keras.ops.convert_to_numpy(o) for o in out]  # [y, *states]


def run_ours(module: Any, x: np.ndarray, hx: Any = None) -> list[np.ndarray]:
    """Keras' output layout from a gatedrnn module: y, then per direction its h (and c)."""
    with torch.no_grad():
        y, state = module(torch.from_numpy(x), hx)
    parts = list(state) if isinstance(state, tuple) else [state]  # each (D, B, H)
    D = parts[0].shape[0]
    return [y.numpy()] + [p[d].numpy() for d in range(D) for p in parts]


def assert_close(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=0)


@st.composite
def layers(draw: st.DrawFn) -> tuple[str, dict[str, Any], bool]:
    kind = draw(st.sampled_from(["LSTM", "GRU", "SimpleRNN"]))
    kw: dict[str, Any] = {"use_bias": draw(st.booleans())}
    if kind == "GRU":
        kw["reset_after"] = draw(st.booleans())
    if kind == "SimpleRNN":
        kw["activation"] = draw(st.sampled_from(["tanh", "relu"]))
    return kind, kw, draw(st.booleans())


@settings(max_examples=20, deadline=None)
@given(spec=layers(), units=st.integers(1, 5), T=st.integers(1, 6), B=st.integers(1, 3))
def test_from_keras_then_to_keras_compute_what_keras_computes(spec, units, T, B) -> None:
    kind, kw, bidirectional = spec
    layer = keras_layer(kind, units, bidirectional, **kw)
    x = np.random.default_rng(1).normal(size=(B, T, I)).astype("float32")
    want = run_keras(layer, x)
    module = from_keras(layer).eval()
    assert module.batch_first and module.bidirectional == bidirectional
    assert_close(run_ours(module, x), want)
    assert_close(run_keras(to_keras(module), x), want)


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_gate_order_and_biases_with_an_initial_state(reset_after: bool) -> None:
    # keras #8720 / #15915: z, r, h against r, z, n, and one bias against two.
    layer = keras_layer("GRU", 4, False, reset_after=reset_after)
    rng = np.random.default_rng(2)
    x, h0 = rng.normal(size=(2, 5, I)).astype("float32"), rng.normal(size=(2, 4)).astype("float32")
    module = from_keras(layer).eval()
    assert module.reset_after is reset_after
    assert_close(run_ours(module, x, torch.from_numpy(h0)[None]), run_keras(layer, x, [h0]))
    shapes = [w.shape for w in to_keras(module).get_weights()]
    assert shapes[2] == ((2, 12) if reset_after else (12,))


def test_lstm_initial_state_order_is_h_then_c() -> None:
    layer = keras_layer("LSTM", 4, False)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 5, I)).astype("float32")
    h0, c0 = (rng.normal(size=(2, 4)).astype("float32") for _ in range(2))
    hx = (torch.from_numpy(h0)[None], torch.from_numpy(c0)[None])
    assert_close(run_ours(from_keras(layer).eval(), x, hx), run_keras(layer, x, [h0, c0]))


def test_training_options_travel_and_float64_stays_float64() -> None:
    module = from_keras(keras_layer("LSTM", 4, False, recurrent_dropout=0.25, dtype="float64"))
    assert module.recurrent_dropout == 0.25 and module.weight_ih_l0.dtype == torch.float64
    assert to_keras(module).get_config()["recurrent_dropout"] == 0.25


def test_from_keras_refuses_what_gatedrnn_cannot_compute() -> None:
    with pytest.raises(ValueError, match="merge_mode='sum'"):
        from_keras(keras.layers.Bidirectional(keras.layers.GRU(4), merge_mode="sum"))
    with pytest.raises(ValueError, match="activation='relu'"):
        from_keras(keras_layer("LSTM", 4, False, activation="relu"))
    with pytest.raises(ValueError, match="go_backwards=True"):
        from_keras(keras_layer("GRU", 4, False, go_backwards=True))
    with pytest.raises(ValueError, match="no weights yet"):
        from_keras(keras.layers.GRU(4))
    with pytest.raises(TypeError, match="Dense"):
        from_keras(keras.layers.Dense(4))
    with pytest.warns(UserWarning, match="dropout=0.5"):
        from_keras(keras_layer("GRU", 4, False, dropout=0.5))


@pytest.mark.parametrize("module,option", [
    (gatedrnn.LSTM(I, 4, num_layers=2), "num_layers=2"),
    (gatedrnn.LSTM(I, 4, peephole=True), "peephole=True"),
    (gatedrnn.LSTM(I, 4, proj_size=2), "proj_size=2"),
    (gatedrnn.GRU(I, 4, layer_norm=True), "layer_norm=True"),
    (gatedrnn.GRU(I, 4, zoneout=0.1), "zoneout=0.1"),
])
def test_to_keras_names_the_option_keras_lacks(module: Any, option: str) -> None:
    with pytest.raises(ValueError, match=option):
        to_keras(module)


def test_docstring_examples_run() -> None:
    import doctest

    from gatedrnn.interop import keras as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
