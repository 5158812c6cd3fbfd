"""Hidden-size borders in ``engine="auto"``'s rows and tuned plans, plans of the first schema,
``explain`` naming the border, and the frozen table ``TABLES["2026-11"]`` staying as it was.

The suite runs with GATEDRNN_PLAN=off (tests/conftest.py); the tests that need a plan point it at
their own files and restore the dispatch state afterwards (the ``fresh`` fixture).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gatedrnn
from gatedrnn.engines import dispatch, plan
from gatedrnn.engines.rows import TABLE_2026_11, Row, bounds, describe, matches
from gatedrnn.modules import tune as tuning

# sha256 of the frozen table's rows as ``describe`` prints them (the fields that are not their
# defaults), so a new Row field with a default keeps it and any edit of a row changes it.
TABLE_2026_11_DIGEST = "1817c6cdbac9ee862a53dbda3fced893032f772d1403ebeb63213901e2ab0a23"
FEATURES = {"device": "cpu", "kind": "LSTM", "dtype": "float32", "torch_op": True,
            "simple": True, "training": False, "triton": False, "proj": False, "amx": False,
            "bf16": False, "isa": "avx512"}


def test_the_frozen_table_2026_11_is_unchanged() -> None:
    text = "\n".join(describe(r) for r in TABLE_2026_11)
    assert hashlib.sha256(text.encode()).hexdigest() == TABLE_2026_11_DIGEST
    assert dispatch.TABLES["2026-11"] is TABLE_2026_11
    assert all(r.min_hidden == 0 and r.max_hidden is None for r in TABLE_2026_11)


@settings(max_examples=200)
@given(lo=st.integers(0, 600), span=st.none() | st.integers(0, 600),
       hidden=st.none() | st.integers(1, 1500))
def test_a_row_matches_the_hidden_sizes_inside_its_border(lo: int, span: int | None,
                                                          hidden: int | None) -> None:
    hi = None if span is None else lo + span
    row = Row("native", kind="LSTM", min_hidden=lo, max_hidden=hi)
    bordered = lo > 0 or hi is not None
    inside = hidden is not None and lo <= hidden and (hi is None or hidden <= hi)
    assert matches(row, FEATURES, 1, 100, 1, hidden) == (inside if bordered else True)
    assert matches(Row("native", kind="LSTM"), FEATURES, 1, 100, 1, hidden)  # no border: any H
    assert ("hidden" in bounds(row)) == bordered  # explain prints both
    assert (f"min_hidden={lo}" in describe(row)) == (lo > 0)
    assert (f"max_hidden={hi}" in describe(row)) == (hi is not None)


def _choose(hidden: int | None, kind: str = "GRU", batch: int = 1) -> str:
    return dispatch.choose("cpu", kind, "float32", torch_op=True, simple=True, training=False,
                           batch=batch, work=200 * batch * (hidden or 1), hidden=hidden)


def _save(file: Path, rows: list[Row]) -> Path:
    return plan.save(plan.Plan(plan.machine_key(dispatch.TABLE, dispatch.CPU),
                               [(r, "test") for r in rows]), file)


def test_a_plan_entry_with_a_hidden_border(fresh, tmp_path: Path) -> None:
    entry = Row("native", device="cpu", kind="GRU", dtype="float32", torch_op=True, simple=True,
                training=False, max_hidden=100, measured_on="tuned")
    file = _save(tmp_path / "plan.json", [entry])
    assert json.loads(file.read_text())["version"] == plan.VERSION == 2
    assert plan.read(file).entries[0][0] == entry  # the border survives JSON
    fresh.setenv(plan.ENV, str(file))
    dispatch.reload()
    assert [_choose(h) for h in (16, 100, 101, 512)] == ["native", "native", "fused", "fused"]
    assert _choose(None) == "fused"  # a caller that does not know H: the entry cannot decide


def test_a_plan_of_the_first_schema_decides_any_hidden_size(fresh, tmp_path: Path) -> None:
    entry = {"engine": "native", "device": "cpu", "kind": "GRU", "dtype": "float32",
             "torch_op": True, "simple": True, "training": False, "max_batch": 4}
    file = tmp_path / "v1.json"
    file.write_text(json.dumps({"version": 1, "key": plan.machine_key(dispatch.TABLE, dispatch.CPU),
                                "entries": [{"row": entry, "note": "v1"}]}))
    fresh.setenv(plan.ENV, str(file))
    dispatch.reload()  # (read without a warning: the suite makes warnings errors)
    assert [_choose(h) for h in (8, 128, 1024, None)] == ["native"] * 4
    assert _choose(128, batch=5) == "fused"
    file.write_text(json.dumps({"version": 99, "key": {}, "entries": []}))
    dispatch.reload()
    with pytest.warns(plan.PlanWarning, match="version"):
        assert _choose(128) == "fused"


def test_explain_names_the_hidden_border(fresh, tmp_path: Path) -> None:
    entry = Row("native", device="cpu", kind="GRU", dtype="float32", torch_op=True, simple=True,
                training=False, min_hidden=97, measured_on="tuned")
    fresh.setenv(plan.ENV, str(_save(tmp_path / "plan.json", [entry])))
    dispatch.reload()
    with torch.no_grad():
        why = dispatch.explain(gatedrnn.GRU(8, 128), torch.randn(40, 2, 8))
    text = str(why)
    assert why.source == "plan" and why.engine == "native" and why.features["hidden"] == 128
    assert "hidden 128" in text and "min_hidden=97" in text and "hidden 97-inf" in text


@pytest.mark.parametrize("make", [
    lambda: gatedrnn.LSTM(4, 24), lambda: gatedrnn.GRU(4, 24, batch_first=True),
    lambda: gatedrnn.RNN(4, 24), lambda: gatedrnn.GRUCell(4, 24), lambda: gatedrnn.MinGRU(4, 24)])
def test_every_module_passes_its_hidden_size(make) -> None:  # type: ignore[no-untyped-def]
    module = make()
    cell = isinstance(module, gatedrnn.GRUCell)  # (a cell asks only under autograd)
    x = torch.randn(3, 4) if cell else torch.randn(40, 3, 4)
    with torch.set_grad_enabled(cell):
        why = dispatch.explain(module, x)
    assert why.features["hidden"] == 24


@settings(max_examples=100)
@given(st.dictionaries(st.tuples(st.sampled_from([1, 2, 4, 16, 64]),
                                 st.sampled_from([32, 64, 128, 256, 512]),
                                 st.sampled_from([100, 1000, 10_000, 100_000])),
                       st.sampled_from(["native", "fused"]), min_size=1, max_size=12),
       st.integers(0, 300), st.integers(1, 2000), st.integers(0, 400_000))
def test_grid_borders_partition_the_shapes(winners: dict, b: int, h: int, w: int) -> None:
    """Every (batch, hidden, work) falls in exactly one band, and a measured point in its own."""
    rows = [(blo, bhi, hlo, hhi, wlo, whi, e) for blo, bhi, hb in tuning.borders(winners)
            for hlo, hhi, wb in hb for wlo, whi, e in wb]

    def inside(r: tuple, bb: int, hh: int, ww: int) -> bool:
        return all(lo <= v and (hi is None or v <= hi)
                   for lo, hi, v in ((r[0], r[1], bb), (r[2], r[3], hh), (r[4], r[5], ww)))

    assert sum(inside(r, b, h, w) for r in rows) == 1
    for (pb, ph, pw), engine in winners.items():
        found, = [r for r in rows if inside(r, pb, ph, pw)]
        assert found[6] == engine


def test_tuned_hidden_borders_hold_outside_the_grid(fresh, tmp_path: Path) -> None:
    # The measured winners depend on H alone: torch's op at H = 16, the fused loops at H = 64.
    hidden: list[int] = []
    real_step = tuning.step

    def step(model, args, training):  # type: ignore[no-untyped-def]
        hidden.append(model.hidden_size)
        return real_step(model, args, training)

    def race(calls, repeats, timer):  # type: ignore[no-untyped-def]
        return {"native": 1.0, "fused": 2.0} if hidden[-1] == 16 else {"native": 2.0, "fused": 1.0}

    fresh.setattr(tuning, "step", step)
    fresh.setattr(tuning, "race", race)
    grid = [(tuning.Group("GRU", "float32", False), [(20, B, 8, H) for B in (1, 8) for H in (16, 64)])]
    rows = [r for r, _ in tuning.tune_grid(grid)]
    split = math.isqrt(16 * 64)  # 32
    assert [(r.engine, r.min_batch, r.max_batch, r.min_hidden, r.max_hidden) for r in rows] == [
        ("native", 0, None, 0, split), ("fused", 0, None, split + 1, None)]
    fresh.setenv(plan.ENV, str(_save(tmp_path / "plan.json", rows)))
    dispatch.reload()
    for H, engine in ((12, "native"), (24, "native"), (40, "fused"), (200, "fused")):
        module = gatedrnn.GRU(5, H)  # shapes outside the grid: other T, B, I and H
        with torch.no_grad():
            module(torch.randn(50, 3, 5))
        assert module.last_engine == engine, H
