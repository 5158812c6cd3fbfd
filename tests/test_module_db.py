"""PyTorch's own ModuleInfo entries for nn.RNN, GRU, LSTM and the cells, run against gatedrnn.

torch's test_modules.py runs, for every ModuleInfo, ``module_error_inputs_func`` (each
ErrorModuleInput must raise its class, matching its regex, at construction or in forward) and
``module_inputs_func`` (each sample's forward). We do the same with gatedrnn's class in place of
torch's, on every engine, and compare each sample's outputs with torch.nn's on the same weights.
"""

from __future__ import annotations

import functools
import warnings

import pytest
import torch

import gatedrnn

common_modules = pytest.importorskip("torch.testing._internal.common_modules")

OURS = {torch.nn.LSTM: gatedrnn.LSTM, torch.nn.GRU: gatedrnn.GRU, torch.nn.RNN: gatedrnn.RNN,
        torch.nn.LSTMCell: gatedrnn.LSTMCell, torch.nn.GRUCell: gatedrnn.GRUCell,
        torch.nn.RNNCell: gatedrnn.RNNCell}
INFOS = [mi for mi in common_modules.module_db if mi.module_cls in OURS]
ENGINES = ("reference", "fused", "native", "auto")
DTYPES = (torch.float32, torch.float64)
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def _name(mi) -> str:
    return mi.module_cls.__name__


def test_every_recurrent_module_info_is_here() -> None:
    assert sorted(_name(mi) for mi in INFOS) == sorted(c.__name__ for c in OURS)


def _error_inputs(mi, dtype, training):
    return mi.module_error_inputs_func(mi, device="cpu", dtype=dtype, requires_grad=False,
                                       training=training)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mi", INFOS, ids=_name)
def test_error_inputs_raise_torchs_class_and_message(mi, engine) -> None:
    cls = functools.partial(OURS[mi.module_cls], engine=engine)
    count = 0
    for dtype in DTYPES:
        for training in (False, True):
            for err in _error_inputs(mi, dtype, training):
                inp = err.module_error_input
                args, kwargs = inp.constructor_input.args, inp.constructor_input.kwargs
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # torch's dropout notice, as torch's test
                    if err.error_on == common_modules.ModuleErrorEnum.CONSTRUCTION_ERROR:
                        with pytest.raises(err.error_type, match=err.error_regex):
                            cls(*args, **kwargs)
                    else:
                        m = cls(*args, **kwargs).train(training)
                        fw = inp.forward_input
                        with pytest.raises(err.error_type, match=err.error_regex):
                            m(*fw.args, **fw.kwargs)
                count += 1
    assert count > 0


def test_error_input_count() -> None:
    """The issue's target, all of torch's error inputs on every engine: count them."""
    n = sum(len(_error_inputs(mi, torch.float32, False)) for mi in INFOS)
    assert n >= 58  # torch 2.13 ships 58 for these six classes; more is fine


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mi", INFOS, ids=_name)
def test_samples_give_torchs_outputs(mi, engine) -> None:
    for dtype in DTYPES:
        for training in (False, True):
            samples = mi.module_inputs_func(mi, device="cpu", dtype=dtype, requires_grad=True,
                                            training=training)
            for s in samples:
                args, kwargs = s.constructor_input.args, s.constructor_input.kwargs
                torch.manual_seed(0)
                ours = OURS[mi.module_cls](*args, engine=engine, **kwargs).to(dtype).train(training)
                ref = mi.module_cls(*args, **kwargs).to(dtype).train(training)
                ref.load_state_dict(ours.state_dict())
                fw = s.forward_input
                # Dropout draws from the global generator: the same seed for both, as torch.nn
                # itself would need; the samples keep dropout at 0 anyway.
                torch.manual_seed(1)
                got = ours(*fw.args, **fw.kwargs)
                torch.manual_seed(1)
                want = ref(*fw.args, **fw.kwargs)
                a, b = (torch.utils._pytree.tree_leaves(o) for o in (got, want))
                assert len(a) == len(b)
                for u, v in zip(a, b):
                    assert u.shape == v.shape and u.dtype == v.dtype
                    if engine == "native":
                        assert torch.equal(u, v)
                    else:
                        assert torch.allclose(u, v, atol=TOL[dtype], rtol=0), (u - v).abs().max()
                grads = torch.autograd.grad(sum(t.sum() for t in a), list(ours.parameters()))
                ref_grads = torch.autograd.grad(sum(t.sum() for t in b), list(ref.parameters()))
                for g, h in zip(grads, ref_grads):
                    assert torch.allclose(g, h, atol=10 * TOL[dtype], rtol=0)
