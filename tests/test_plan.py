"""The tuned plan (gatedrnn.engines.plan, gatedrnn.tune), the CPU features of the shipped rules,
pinned tables and ``dispatch.explain``.

The suite runs with GATEDRNN_PLAN=off (tests/conftest.py); these tests point it at their own files
and restore the dispatch state afterwards (the ``fresh`` fixture).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch

import gatedrnn
from gatedrnn.engines import dispatch, machine, plan
from gatedrnn.engines.rows import Row
from gatedrnn.modules import tune as tuning

KW = dict(torch_op=True, simple=True, proj=False)


def _entry(engine: str, kind: str, training: bool, batch: int, **kw: object) -> Row:
    return Row(engine, device="cpu", kind=kind, dtype="float32", training=training,
               min_batch=batch, max_batch=batch, measured_on="tuned", **KW, **kw)  # type: ignore[arg-type]


def _write(file: Path, rows: list[Row], key: dict[str, str] | None = None) -> Path:
    key = key or plan.machine_key(dispatch.TABLE, dispatch.CPU)
    return plan.save(plan.Plan(key, [(r, "test") for r in rows]), file)


def _pick(kind: str = "GRU", training: bool = False, batch: int = 4) -> str:
    return dispatch.choose("cpu", kind, "float32", torch_op=True, simple=True, training=training,
                           batch=batch, work=1000)


def test_a_plan_is_used_on_its_machine_only(fresh, tmp_path: Path) -> None:
    assert _pick() == "fused"  # the shipped rule (GRU inference on the CPU)
    file = _write(tmp_path / "plan.json", [_entry("native", "GRU", False, 4)])
    fresh.setenv(plan.ENV, str(file))
    dispatch.reload()
    assert _pick() == "native" and _pick(batch=5) == "fused"  # its border, then the table
    for other in ({"cpu": "0" * 16}, {"torch": "1.0"}, {"source": "f" * 16}):
        _write(file, [_entry("native", "GRU", False, 4)],
               {**plan.machine_key(dispatch.TABLE, dispatch.CPU), **other})
        dispatch.reload()
        assert _pick() == "fused", other  # another CPU, torch or build: not used


def test_gatedrnn_plan_off_ignores_every_plan(fresh, tmp_path: Path) -> None:
    file = _write(tmp_path / "plan.json", [_entry("native", "GRU", False, 4)])
    fresh.setenv(plan.ENV, "off")
    dispatch.reload()
    assert plan.path() is None and _pick() == "fused"
    fresh.setenv(plan.ENV, str(file))
    dispatch.reload()
    assert _pick() == "native"


@pytest.mark.parametrize("damage", ["truncated", "garbage", "wrong type", "bad engine"])
def test_a_damaged_plan_warns_once_and_the_forward_runs(fresh, tmp_path: Path, damage: str) -> None:
    file = _write(tmp_path / "plan.json", [_entry("native", "GRU", False, 4)])
    text = file.read_text()
    data = json.loads(text)
    if damage == "truncated":
        file.write_text(text[: len(text) // 2])
    elif damage == "garbage":
        file.write_bytes(b"\x00\xff" * 10)
    elif damage == "wrong type":
        data["entries"][0]["row"]["min_batch"] = "4"
        file.write_text(json.dumps(data))
    else:
        data["entries"][0]["row"]["engine"] = "rm -rf"
        file.write_text(json.dumps(data))
    fresh.setenv(plan.ENV, str(file))
    dispatch.reload()
    gru = gatedrnn.GRU(8, 16)
    with pytest.warns(plan.PlanWarning, match="ignoring the tuned plan") as caught, torch.no_grad():
        y = gru(torch.randn(20, 4, 8))[0]
    assert len(caught) == 1 and y.shape == (20, 4, 16) and gru.last_engine == "fused"
    dispatch.reload()  # read again in this process: no second warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _pick() == "fused"


def test_the_plan_is_written_atomically(fresh, tmp_path: Path) -> None:
    file = _write(tmp_path / "plan.json", [_entry("native", "GRU", False, 4)])
    before = file.read_text()

    def broken(src: str, dst: str) -> None:
        raise OSError("disk full")

    fresh.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        _write(file, [_entry("fused", "GRU", False, 4)])
    assert file.read_text() == before  # the old plan whole
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]  # no temporary file left
    fresh.undo()
    assert plan.clear(file) and not file.exists() and not plan.clear(file)


def test_a_row_survives_json_and_a_bad_one_is_refused() -> None:
    row = _entry("fused-float32", "LSTM", True, 8, min_work=10, max_work=None, min_threads=2,
                 max_threads=2)
    assert plan.row_from_json(json.loads(json.dumps(plan.row_to_json(row)))) == row
    for bad in ({"engine": "native", "min_batch": -1}, {"engine": "native", "nope": 1},
                {"engine": "native", "training": "yes"}, {"engine": "reference"}, [1]):
        with pytest.raises(ValueError):
            plan.row_from_json(bad)


@pytest.mark.parametrize("kind,shape,planned", [("GRU", (20, 4, 8), "native"),
                                                ("LSTM", (10, 32, 8), "fused"),
                                                ("LSTM", (10, 3, 8), "fused")])
@pytest.mark.parametrize("training", [False, True])
def test_a_tuned_module_gives_the_chosen_engines_outputs(fresh, tmp_path: Path, kind: str,
                                                         shape: tuple, planned: str,
                                                         training: bool) -> None:
    batch = shape[1]
    fresh.setenv(plan.ENV, str(_write(tmp_path / "p.json", [_entry(planned, kind, training, batch)])))
    dispatch.reload()
    torch.manual_seed(0)
    auto = getattr(gatedrnn, kind)(8, 16)
    forced = getattr(gatedrnn, kind)(8, 16, engine=planned)
    forced.load_state_dict(auto.state_dict())
    x = torch.randn(shape)
    with torch.set_grad_enabled(training):
        got, want = auto(x)[0], forced(x)[0]
    assert auto.last_engine == planned and torch.equal(got, want)
    if training:
        g = torch.autograd.grad(got.sum(), list(auto.parameters()))
        h = torch.autograd.grad(want.sum(), list(forced.parameters()))
        assert all(torch.equal(a, b) for a, b in zip(g, h))


def test_entries_apply_at_their_thread_count(fresh, tmp_path: Path) -> None:
    fresh.setenv(plan.ENV, str(_write(tmp_path / "p.json", [
        _entry("native", "GRU", False, 4, min_threads=1, max_threads=1)])))
    dispatch.reload()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert _pick() == "native"
        torch.set_num_threads(2)
        assert _pick() == "fused"  # read per call: the cached answer of 1 thread does not apply
    finally:
        torch.set_num_threads(before)


def test_explain_names_the_plan_entry_or_the_table_row(fresh, tmp_path: Path) -> None:
    x = torch.randn(20, 4, 8)
    with torch.no_grad():
        why = dispatch.explain(gatedrnn.GRU(8, 16), x)
    assert why.source == "table" and why.row == dispatch.TABLE[why.index] and why.engine == "fused"
    assert "table row" in str(why) and "measured on" in str(why)
    fresh.setenv(plan.ENV, str(_write(tmp_path / "p.json", [_entry("native", "GRU", False, 4)])))
    dispatch.reload()
    with torch.no_grad():
        why = dispatch.explain(gatedrnn.GRU(8, 16), x)
    assert (why.source, why.index, why.engine, why.note) == ("plan", 0, "native", "test")
    with dispatch.pinned("2026-11"), torch.no_grad():
        why = dispatch.explain(gatedrnn.GRU(8, 16), x)
    assert why.source == "pinned table 2026-11" and why.engine == "fused"
    why = dispatch.explain(gatedrnn.GRU(8, 16, engine="reference"), x)
    assert why.source == "asked" and "reference" in str(why)


@pytest.mark.parametrize("flags,lstm,gru", [
    ({"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}, "native", "native"),  # Sapphire Rapids
    ({"avx512f", "avx512_bf16"}, "native", "fused-float32"),  # Zen 4: bfloat16, no AMX
    ({"avx2", "fma"}, "fused-float32", "fused-float32"),  # Zen 3, laptops: no bfloat16 hardware
])
def test_the_bfloat16_rules_follow_the_cpu_flags(fresh, flags: set, lstm: str, gru: str) -> None:
    cpu = machine.detect(frozenset(flags))
    fresh.setattr(dispatch, "CPU", cpu)
    assert cpu.bf16 == (lstm == "native") and cpu.isa == ("avx2" if "avx2" in flags else "avx512")

    def pick(kind: str) -> str:
        return dispatch.choose("cpu", kind, "bfloat16", torch_op=True, simple=True,
                               training=False, batch=64)

    assert pick("LSTM") == lstm and pick("GRU") == gru


def test_a_pinned_table_keeps_a_published_runs_engines(fresh) -> None:
    assert _pick("LSTM", training=True, batch=32) == "native"  # the shipped rule moved
    with dispatch.pinned("2026-11"):
        assert _pick("LSTM", training=True, batch=32) == "fused"  # the published runs' engine
    assert _pick("LSTM", training=True, batch=32) == "native"
    with pytest.raises(ValueError, match="no dispatch table"):
        dispatch.pin("1999-01")
    from gatedrnn.toolkit.train import TrainConfig

    assert TrainConfig(task="adding", cell="lstm").dispatch in dispatch.TABLES


@pytest.mark.parametrize("fast", ["native", "fused"])
def test_tune_on_a_model_picks_the_measured_fastest(fresh, tmp_path: Path, fast: str) -> None:
    torch.manual_seed(0)
    model = gatedrnn.LSTM(8, 16, num_layers=2)
    x = torch.randn(10, 8, 8)

    def timer(call) -> float:  # type: ignore[no-untyped-def]  # a clock that favours ``fast``
        call()
        return 0.01 if model.last_engine == fast else 0.02

    file = tmp_path / "p.json"
    result = gatedrnn.tune(model, x, timer=timer, file=file)
    (row, note), = result.entries
    assert row.engine == fast and row.kind == "LSTM" and row.training and "tune(model)" in note
    assert row.min_batch <= 8 <= row.max_batch and row.min_work <= 10 * 8 * 16 <= row.max_work
    assert plan.read(file) is not None and plan.read(file).entries == result.entries
    fresh.setenv(plan.ENV, str(file))
    dispatch.reload()
    model(x)
    assert model.last_engine == fast


def test_the_grid_becomes_borders_between_measured_points(fresh) -> None:
    # Each point's times, by its (T, B): native wins at the short calls, fused at the long one.
    times = {(5, 1): {"native": 1.0, "fused": 2.0}, (50, 1): {"native": 2.0, "fused": 1.0},
             (5, 64): {"native": 1.0, "fused": 2.0}}
    shapes: list[tuple[int, int]] = []
    real_step = tuning.step

    def step(model, args, training):  # type: ignore[no-untyped-def]
        shapes.append(tuple(args[0].shape[:2]))
        return real_step(model, args, training)

    fresh.setattr(tuning, "step", step)
    fresh.setattr(tuning, "race", lambda calls, repeats, timer: times[shapes[-1]])
    grid = [(tuning.Group("GRU", "float32", False), [(5, 1, 8, 16), (50, 1, 8, 16), (5, 64, 8, 16)])]
    rows = [r for r, _ in tuning.tune_grid(grid)]
    # batch 1 and 64 split at isqrt(1·64) = 8; work 80 and 800 at isqrt(80·800) = 252
    assert [(r.engine, r.min_batch, r.max_batch, r.min_work, r.max_work) for r in rows] == [
        ("native", 0, 8, 0, 252), ("fused", 0, 8, 253, None), ("native", 9, None, 0, None)]
    assert all(r.min_threads == r.max_threads == torch.get_num_threads() for r in rows)


def test_cli_tune_writes_shows_and_clears_the_plan(fresh, tmp_path: Path, capsys) -> None:
    from gatedrnn import cli

    file = tmp_path / "plan.json"
    fresh.setenv(plan.ENV, str(file))
    fresh.setattr(tuning, "GRID", [(tuning.Group("GRU", "float32", False), [(3, 2, 4, 8)])])
    before = torch.get_num_threads()
    try:
        assert cli.main(["tune", "--no-progress", "--repeats", "1", "--threads", "1"]) == 0
        assert f"wrote {file}: 1 entries" in capsys.readouterr().out
        assert cli.main(["tune", "--show", "--threads", "1"]) == 0
        shown = capsys.readouterr().out
        assert "1 entries, used" in shown and "0: GRU float32 plain inference" in shown
        assert cli.main(["tune", "--show", "--cell", "gru", "--shape", "3,2,4,8", "--threads", "1"]) == 0
        assert "plan row 0" in capsys.readouterr().out
        assert cli.main(["tune", "--clear"]) == 0 and not file.exists()
        assert "removed" in capsys.readouterr().out
        assert cli.main(["tune", "--show", "--shape", "3,2,4"]) == 2  # not T,B,I,H
    finally:
        torch.set_num_threads(before)
