"""Hostile and damaged model files and checkpoints: every one is a CheckpointError naming the file.

Attacks on checkpoint loading, each as a test: settings outside the checksum, a checkpoint.json
without one, missing or ill-typed config keys, devices nobody asked for, a tiny file naming a huge
model, silent dtype casts, loading into a model of another kind, deep JSON, and temp files of
killed writes. The bit-flip properties flip one bit anywhere in a saved file: it must be refused
with a CheckpointError or, where the bit carries no meaning, load exactly the same thing.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save as st_save

import gatedrnn
from gatedrnn.interop import io
from gatedrnn.interop.io import CheckpointError, load_model, save_model
from gatedrnn.toolkit import checkpoint
from gatedrnn.toolkit.train import TrainConfig, _resume, train

torch.manual_seed(0)
VARIANT_LSTM = gatedrnn.LSTM(3, 4, zoneout=0.1, recurrent_dropout=0.2, weight_drop=0.1, dropout=0.0)


def craft(path: Path, tensors: dict[str, torch.Tensor], meta_text: str) -> None:
    """A file with a valid digest over whatever we put in it: what an attacker can write."""
    fields = {"format": io.FORMAT, "format_version": str(io.FORMAT_VERSION), "metadata": meta_text}
    path.write_bytes(st_save(tensors, metadata={**fields, "sha256": io._digest(tensors, fields)}))


def craft_model(path: Path, config: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None) -> None:
    meta = {"recurrent": {"": config}, "extra": {}, "gatedrnn_version": "0"}
    craft(path, tensors if tensors is not None else {}, json.dumps(meta))


def rewrite_settings(path: Path, change: Any) -> None:
    """Change the header's settings in place, keeping the old digest (a bit-rot or tampering)."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    change(header["__metadata__"])
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + n:])


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "m.safetensors"


def test_the_settings_in_the_header_are_under_the_checksum(path: Path) -> None:
    save_model(VARIANT_LSTM, path)

    def more_zoneout(meta: dict) -> None:
        inner = json.loads(meta["metadata"])
        inner["recurrent"][""]["zoneout"] = 0.5
        meta["metadata"] = json.dumps(inner)

    rewrite_settings(path, more_zoneout)
    with pytest.raises(CheckpointError, match=f"{path}.*checksum"):
        load_model(path)


KEY_ATTACKS = [
    ("hidden_size", "4"), ("hidden_size", 0), ("hidden_size", True), ("num_layers", 1.0),
    ("dropout", 2.0), ("zoneout", 1.0), ("weight_drop", -0.1), ("recurrent_dropout", "0"),
    ("forget_bias", math.inf), ("forget_bias", True), ("init", "xavier"), ("chrono_max_len", 0),
    ("proj_size", -1), ("bias", 2), ("bias", 1.0), ("batch_first", None), ("dtype", "int32"),
    ("dtype", "meta"), ("engine", 3), ("peephole", "yes"), ("peephole", 1),
]


@pytest.mark.parametrize("key, value", KEY_ATTACKS, ids=[f"{k}={v!r}" for k, v in KEY_ATTACKS])
def test_every_config_key_is_checked_for_type_and_range(path: Path, key: str, value: Any) -> None:
    config = {**VARIANT_LSTM.get_config(), key: value}
    craft_model(path, config, VARIANT_LSTM.state_dict())
    with pytest.raises(CheckpointError, match=f"{path}.*{key}"):
        load_model(path)


@pytest.mark.parametrize("change", ["missing", "device", "unknown"])
def test_config_keys_are_required_and_no_others_accepted(path: Path, change: str) -> None:
    config = VARIANT_LSTM.get_config()
    if change == "missing":
        del config["zoneout"]  # no silent default of 0
    else:
        config["device" if change == "device" else "colour"] = "meta"
    craft_model(path, config, VARIANT_LSTM.state_dict())
    word = {"missing": "missing the keys \\['zoneout'\\]", "device": "unknown keys \\['device'\\]",
            "unknown": "unknown keys \\['colour'\\]"}[change]
    with pytest.raises(CheckpointError, match=f"{path}.*{word}"):
        load_model(path)


@pytest.mark.parametrize("device, why", [
    ("meta", "cannot load onto device 'meta'"), ("bogus", "not a device"),
    ("cuda", "CUDA is not available" if not torch.cuda.is_available() else "no such test"),
])
def test_only_the_cpu_or_an_existing_cuda_device(path: Path, device: str, why: str) -> None:
    if torch.cuda.is_available() and device == "cuda":
        pytest.skip("this machine has CUDA")
    save_model(gatedrnn.GRU(2, 3), path)
    with pytest.raises(CheckpointError, match=f"{path}.*{why}"):
        load_model(path, device=device)
    assert load_model(path).weight_ih_l0.device.type == "cpu"  # the default


def test_a_tiny_file_naming_a_huge_model_fails_before_allocating(path: Path, monkeypatch) -> None:
    huge = gatedrnn.LSTM(1, 2).get_config() | {"input_size": 4096, "hidden_size": 4096, "num_layers": 2}
    craft_model(path, huge, {"weight_ih_l0": torch.zeros(2, 2)})
    assert path.stat().st_size < 2500
    built_on = []
    real = gatedrnn.from_config
    monkeypatch.setattr(gatedrnn, "from_config",
                        lambda cfg: built_on.append(torch.get_default_device().type) or real(cfg))
    with pytest.raises(CheckpointError, match=f"{path}.*do not fit"):
        load_model(path)
    assert built_on == []  # refused by the config's arithmetic: nothing built, not even on meta


@pytest.mark.parametrize("change", [{"hidden_size": 10**9}, {"num_layers": 20000},
                                    {"input_size": 2**62}, {"num_layers": 10**12}])
def test_a_config_out_of_all_proportion_is_refused_before_building(path: Path, monkeypatch,
                                                                   change: dict) -> None:
    """hidden_size=10**9 overflowed torch's size arithmetic (a RuntimeError, no file named);
    num_layers=20000 in a 1 kB file built modules on the meta device for ~70 s first."""
    lstm = gatedrnn.LSTM(3, 4)
    craft_model(path, lstm.get_config() | change, lstm.state_dict())
    assert path.stat().st_size < 2500
    monkeypatch.setattr(gatedrnn, "from_config", lambda cfg: pytest.fail("built a module"))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=f"{path}.*(do not fit|config's model has)"):
        load_model(path)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.int32, torch.bool, torch.float64])
def test_dtypes_must_match_no_silent_casts(path: Path, dtype: torch.dtype) -> None:
    gru = gatedrnn.GRU(2, 3)
    tensors = {k: v.to(dtype) if k == "weight_hh_l0" else v for k, v in gru.state_dict().items()}
    craft_model(path, gru.get_config(), tensors)
    with pytest.raises(CheckpointError, match=f"{path}.*'weight_hh_l0' is {dtype}.*no silent casts"):
        load_model(path)
    save_model(gru, path)  # and into a given model of another dtype
    with pytest.raises(CheckpointError, match="differs from the model's in \\['dtype'\\]"):
        load_model(path, gatedrnn.GRU(2, 3, dtype=torch.float64))


@pytest.mark.parametrize("saved, into, diff", [
    (gatedrnn.GRU(2, 3, reset_after=False), gatedrnn.GRU(2, 3), "reset_after"),
    (gatedrnn.RNN(2, 3, nonlinearity="relu"), gatedrnn.RNN(2, 3), "nonlinearity"),
    (gatedrnn.LSTM(2, 3, zoneout=0.1), gatedrnn.LSTM(2, 3), "zoneout"),
], ids=["reset_after", "relu-into-tanh", "zoneout"])
def test_loading_into_a_model_checks_its_config(path: Path, saved: Any, into: Any, diff: str) -> None:
    save_model(saved, path)
    with pytest.raises(CheckpointError, match=f"{path}.*differs from the model's in \\['{diff}'\\]"):
        load_model(path, into)
    nested = torch.nn.Sequential(into)
    save_model(torch.nn.Sequential(saved), path)
    with pytest.raises(CheckpointError, match=f"{path}.*at '0' differs.*{diff}"):
        load_model(path, nested)
    twin = from_engine = type(saved)(**{k: v for k, v in saved.get_config().items()
                                        if k not in ("type", "dtype", "engine")}, engine="reference")
    save_model(saved, path)
    assert load_model(path, twin) is from_engine  # the engine is how, not what: it may differ


@pytest.mark.parametrize("where", ["header", "metadata"])
def test_deep_json_is_a_clear_error_not_a_recursion_error(path: Path, where: str) -> None:
    deep = "[" * 50_000 + "]" * 50_000
    if where == "header":
        text = ('{"__metadata__": {"format": "' + io.FORMAT + '"}, "x": ' + deep + '}').encode()
        text += b" " * (-len(text) % 8)
        path.write_bytes(len(text).to_bytes(8, "little") + text)
    else:
        craft(path, {}, '{"recurrent": ' + deep + '}')
    with pytest.raises(CheckpointError, match=f"{path}.*nested more than {io.MAX_DEPTH} deep"):
        load_model(path)


def test_a_huge_header_is_refused_unread(path: Path) -> None:
    path.write_bytes((io.MAX_HEADER + 8).to_bytes(8, "little") + b" " * (io.MAX_HEADER + 8))
    with pytest.raises(CheckpointError, match=f"{path}.*more than the {io.MAX_HEADER} allowed"):
        load_model(path)


def test_temp_files_of_killed_writes_are_cleaned_on_the_next_save(path: Path) -> None:
    dead = 2**22 + 12345  # above Linux's pid_max default of 2**22: no such process
    stale = [path.parent / f".{path.name}.w{dead}.0a1b2c3d.tmp",
             path.parent / f".{path.name}.k3j4h5_x.tmp"]  # mkstemp's names, from older versions
    live = path.parent / f".{path.name}.w{os.getppid()}.00000000.tmp"  # a writer still at work
    others = [path.parent / f".other.safetensors.w{dead}.00000000.tmp",  # other files' business
              path.parent / f".{path.name}.b.w{dead}.00000000.tmp"]
    for p in (*stale, live, *others):
        p.write_bytes(b"x" * 100)
    save_model(gatedrnn.GRU(2, 3), path)
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, live.name,
                                                                    *(p.name for p in others)])


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@settings(max_examples=300, deadline=None)
@given(fraction=st.floats(0, 1, exclude_max=True))
def test_any_single_bit_flip_is_refused_or_harmless(tmp_path_factory: Any, fraction: float) -> None:
    path = tmp_path_factory.mktemp("flip") / "m.safetensors"
    save_model(VARIANT_LSTM, path)
    data = path.read_bytes()
    path.write_bytes(flip(data, int(fraction * len(data) * 8)))
    try:
        loaded = load_model(path)
    except CheckpointError as e:
        assert str(path) in str(e)
        return
    # Only a bit that carries no meaning (header padding or JSON whitespace) may load, and then
    # exactly the same model.
    assert loaded.get_config() == VARIANT_LSTM.get_config()
    for (name, a), b in zip(loaded.state_dict().items(), VARIANT_LSTM.state_dict().values(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), name


@pytest.fixture(scope="module")
def run(tmp_path_factory: Any) -> tuple[Path, TrainConfig]:
    cfg = TrainConfig(task="adding", task_args={"length": 6, "test_size": 8}, cell="lstm", hidden=3,
                      steps=2, eval_every=2, progress=False, options={"zoneout": 0.1},
                      out=str(tmp_path_factory.mktemp("run")))
    train(cfg)
    return Path(cfg.out), cfg


def resume_into_fresh(folder: Path, cfg: TrainConfig) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    from gatedrnn.toolkit.model import build_model
    from gatedrnn.toolkit.tasks import get_task

    task = get_task(cfg.task, **cfg.task_args)
    model = build_model(task, cfg.cell, cfg.hidden, cfg.layers, **cfg.options)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    assert _resume(TrainConfig(**{**cfg.__dict__, "out": str(folder)}), task, model, opt)[0] == 2
    return model, opt


@settings(max_examples=300, deadline=None)
@given(which=st.sampled_from(["checkpoint.json", "weights-00000002.safetensors"]),
       fraction=st.floats(0, 1, exclude_max=True))
def test_any_bit_flip_in_a_checkpoint_is_refused_or_harmless(tmp_path_factory: Any, run: Any,
                                                             which: str, fraction: float) -> None:
    good, cfg = run
    folder = tmp_path_factory.mktemp("ckpt")
    for f in good.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    data = (folder / which).read_bytes()
    (folder / which).write_bytes(flip(data, int(fraction * len(data) * 8)))
    try:
        model, opt = resume_into_fresh(folder, cfg)
    except CheckpointError as e:
        assert str(folder) in str(e)
        return
    want_model, want_opt = resume_into_fresh(good, cfg)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 want_model.state_dict().values(), strict=True))
    assert opt.state_dict()["param_groups"] == want_opt.state_dict()["param_groups"]


@pytest.mark.parametrize("drop", ["optimizer", "model", "task", "sha256", "step"])
def test_a_checkpoint_json_without_a_field_is_named(run: Any, tmp_path: Path, drop: str) -> None:
    good, cfg = run
    for f in good.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    record = json.loads((tmp_path / "checkpoint.json").read_text())
    del record[drop]
    record["checksum"] = checkpoint.checksum(record)  # a consistent file, only incomplete
    (tmp_path / "checkpoint.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=str(tmp_path)):
        resume_into_fresh(tmp_path, cfg)


def test_the_optimizer_settings_are_under_the_checksum(run: Any, tmp_path: Path) -> None:
    good, cfg = run
    for f in good.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    record = json.loads((tmp_path / "checkpoint.json").read_text())
    record["optimizer"]["param_groups"][0]["eps"] = 1e-3
    (tmp_path / "checkpoint.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=f"{tmp_path}.*checksum does not match"):
        resume_into_fresh(tmp_path, cfg)


def _rewrite_record(good: Path, folder: Path, change: Any) -> None:
    """A copy of the run's checkpoint with checkpoint.json changed and its checksum recomputed:
    a consistent file, as an attacker (or a buggy writer) can make one."""
    for f in good.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    record = json.loads((folder / "checkpoint.json").read_text())
    change(record)
    record["checksum"] = checkpoint.checksum(record)
    (folder / "checkpoint.json").write_text(json.dumps(record))


@pytest.mark.parametrize("key,value", [("eps", -1), ("lr", -0.5), ("weight_decay", -1),
                                       ("betas", [0.9, 1.0]), ("betas", [-0.1, 0.999]),
                                       ("eps", float("nan"))])
def test_optimizer_settings_out_of_torchs_range_are_refused(run: Any, tmp_path: Path, key: str,
                                                            value: Any) -> None:
    """eps=-1 used to resume, and be carried into the next checkpoint; torch.optim.Adam itself
    refuses it ("Invalid epsilon value")."""
    good, cfg = run

    def change(record: dict) -> None:
        record["optimizer"]["param_groups"][0][key] = value
    _rewrite_record(good, tmp_path, change)
    with pytest.raises(CheckpointError, match=f"{tmp_path}.*{key}.*range"):
        resume_into_fresh(tmp_path, cfg)


def test_a_run_config_out_of_all_proportion_is_refused_before_building(run: Any, tmp_path: Path,
                                                                       monkeypatch) -> None:
    from gatedrnn.toolkit import sample

    good, _ = run

    def change(record: dict) -> None:
        record["model"]["rnn"]["num_layers"] = 20000
    _rewrite_record(good, tmp_path, change)
    monkeypatch.setattr(gatedrnn, "from_config", lambda cfg: pytest.fail("built a module"))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="do not fit"):
        sample.load_model(tmp_path)
    assert time.perf_counter() - start < 1.0
