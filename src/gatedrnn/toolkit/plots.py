"""Figures of a run or a compare report, drawn from the files a run leaves (so they can be redrawn).

A run folder holds metrics.jsonl and checkpoint.json (``gatedrnn.toolkit.train``) and, after
``gatedrnn compare``, analysis.safetensors (gradient norms, gates, hidden states). A report folder
holds one run folder per cell. ``redraw(folder)`` draws whatever the files allow:
    learning_curves.png   the headline test metric against training steps, baseline dashed
    gradient_norms.png    ‖∂L/∂h_t‖ against t, log scale, after training (and at initialisation)
    gates_{cell}.png      heat maps (hidden unit × time) of the gates and the hidden state
Matplotlib runs on the Agg backend: no display is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from safetensors import SafetensorError  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

from ..interop.io import CheckpointError, parse_json  # noqa: E402
from .checkpoint import checksum  # noqa: E402
from .train import check_run_meta, read_log  # noqa: E402

ANALYSIS_FILE = "analysis.safetensors"
COLORS = {"rnn": "tab:gray", "lstm": "tab:blue", "gru": "tab:orange"}
LABELS = {"rnn": "tanh RNN", "lstm": "LSTM", "gru": "GRU"}


def read_run(folder: str | Path) -> dict[str, Any]:
    """A run folder's log records, checkpoint metadata and analysis arrays (each may be empty)."""
    folder = Path(folder)
    records = read_log(folder / "metrics.jsonl")
    meta_path = folder / "checkpoint.json"
    meta = parse_json(str(meta_path), meta_path.read_bytes()) if meta_path.exists() else {}
    if meta:  # only its settings are drawn, but they are checked like a resume checks them
        if not isinstance(meta, dict) or meta.get("checksum") != checksum(meta):
            raise CheckpointError(f"{meta_path} is corrupted: its checksum does not match its contents")
        check_run_meta(meta_path, meta)
    try:
        arrays = load_file(folder / ANALYSIS_FILE) if (folder / ANALYSIS_FILE).exists() else {}
    except SafetensorError as e:
        raise CheckpointError(f"{folder / ANALYSIS_FILE} is corrupt ({e})") from None
    return {"records": records, "meta": meta, "analysis": arrays}


def _label(cell: str) -> str:
    return LABELS.get(cell, cell)


def learning_curves(runs: dict[str, dict[str, Any]], path: Path) -> None:
    """Test metric against steps for each run, with the task's baseline (and threshold) dashed."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    task: dict[str, Any] = {}
    for cell, run in runs.items():
        task = run["meta"].get("task", task)
        metric = task.get("metric", "loss")
        steps = [r["step"] for r in run["records"]]
        values = [r[metric] for r in run["records"]]
        ax.plot(steps, values, marker="o", ms=2.5, color=COLORS.get(cell), label=_label(cell))
    metric = task.get("metric", "loss")
    if "baseline" in task:
        ax.axhline(task["baseline"], ls="--", color="black", lw=1,
                   label=f"baseline {task['baseline']:.3g}")
    solved_below = task.get("solved_below")
    if solved_below is not None:
        ax.axhline(solved_below, ls=":", color="tab:green", lw=1.2, label=f"solved below {solved_below:g}")
    if task.get("lower_is_better", True) and metric.endswith(("mse", "ce")):
        ax.set_yscale("log")
    args = ", ".join(f"{k}={v}" for k, v in task.get("args", {}).items() if k != "vocab")
    pretty = metric.replace("_", " ").replace("mse", "MSE")
    ax.set(xlabel="training step", ylabel=pretty,
           title=f"{task.get('name', '')} ({args}): {pretty} during training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def gradient_norms(runs: dict[str, dict[str, Any]], path: Path) -> None:
    """‖∂L/∂h_t‖ against t (log scale) for each run, after training (solid) and at init (dashed)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for cell, run in runs.items():
        arrays = run["analysis"]
        if "grad_norm" not in arrays:
            continue
        t = np.arange(1, len(arrays["grad_norm"]) + 1)
        ax.plot(t, arrays["grad_norm"], color=COLORS.get(cell), label=f"{_label(cell)}, trained")
        if "grad_norm_init" in arrays:
            ax.plot(t, arrays["grad_norm_init"], color=COLORS.get(cell), ls="--", lw=1, alpha=0.7,
                    label=f"{_label(cell)}, at initialisation")
    ax.set_yscale("log")
    ax.set(xlabel="time step t (the loss is read after the last step)",
           ylabel=r"$\|\partial L / \partial h_t\|$ (mean over test sequences)",
           title="How much of the loss's gradient reaches step t")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# What a value of 1 means for each gate, as printed beside its panel.
MEANING = {"forget": "1 = keep the cell state", "input": "1 = write the candidate into the cell",
           "output": "1 = show the cell in h", "reset": "0 = ignore h in the candidate",
           "update": "1 = keep h unchanged (h' = (1-z) n + z h)"}


def gates(cell: str, arrays: dict[str, np.ndarray], path: Path) -> None:
    """Heat maps (unit × time) of each recorded gate and of the hidden state, for one sequence;
    marked steps (the adding problem's two markers) are red triangles above each panel."""
    names = [k.removeprefix("gate.") for k in arrays if k.startswith("gate.")] + ["hidden"]
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 1.9 * len(names) + 0.7), sharex=True,
                             squeeze=False)
    marks = arrays.get("marks", np.zeros(0))
    for ax, name in zip(axes[:, 0], names):
        data = arrays["hidden"] if name == "hidden" else arrays[f"gate.{name}"]  # (T, H)
        gate = name != "hidden"
        image = ax.imshow(data.T, aspect="auto", interpolation="nearest", origin="lower",
                          cmap="viridis" if gate else "RdBu_r", vmin=0 if gate else -1, vmax=1)
        # Triangles outside the image, so that they hide none of the activations at those steps.
        ax.plot(marks, np.full(len(marks), 1.0), "v", color="red", ms=6, clip_on=False,
                transform=ax.get_xaxis_transform())
        ax.set_ylabel("unit")
        title = f"{name} gate ({MEANING[name]})" if gate else "hidden state h_t"
        ax.set_title(title, fontsize=9, loc="left", pad=7)
        fig.colorbar(image, ax=ax, pad=0.01)
    axes[-1, 0].set_xlabel("time step" + (" (red triangles: the marked steps)" if len(marks) else ""))
    what = "activations" if len(names) > 1 else "no gates; its hidden state"
    fig.suptitle(f"{_label(cell)}: {what} over one test sequence", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def redraw(folder: str | Path) -> list[Path]:
    """Draw every figure the files in ``folder`` (a run or a report) allow; returns the paths."""
    folder = Path(folder)
    if (folder / "metrics.jsonl").exists():
        runs = {read_run(folder)["meta"].get("train", {}).get("cell", folder.name): read_run(folder)}
    else:
        runs = {p.name: read_run(p) for p in sorted(folder.iterdir())
                if p.is_dir() and (p / "metrics.jsonl").exists()}
    if not runs:
        raise FileNotFoundError(f"no metrics.jsonl in {folder} or its sub-folders: nothing to plot")
    order = {c: i for i, c in enumerate(("rnn", "lstm", "gru"))}
    runs = dict(sorted(runs.items(), key=lambda kv: order.get(kv[0], 9)))
    written = [folder / "learning_curves.png"]
    learning_curves(runs, written[0])
    if any("grad_norm" in r["analysis"] for r in runs.values()):
        written.append(folder / "gradient_norms.png")
        gradient_norms(runs, written[-1])
    for cell, run in runs.items():
        if "hidden" in run["analysis"]:
            written.append(folder / f"gates_{cell}.png")
            gates(cell, run["analysis"], written[-1])
    return written
