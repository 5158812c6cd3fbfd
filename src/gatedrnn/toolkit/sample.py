"""Generate text from a character-level language model checkpoint (``gatedrnn sample``).

The checkpoint alone is enough: checkpoint.json holds the model's config and the task's vocabulary,
the safetensors file the weights. The prime text is read in one call; then one character at a
time is drawn from softmax(logits / temperature) and fed back with the carried state.

Example:
    >>> import tempfile, pathlib
    >>> folder = tempfile.mkdtemp()
    >>> text = pathlib.Path(folder, "abc.txt"); _ = text.write_text("abc " * 500)
    >>> from gatedrnn.toolkit.train import TrainConfig, train
    >>> _ = train(TrainConfig(task="charlm", task_args={"text": str(text), "length": 16}, cell="gru",
    ...                       hidden=8, steps=2, out=folder, progress=False))
    >>> len(sample_from(folder, chars=20, prime="ab"))
    22
"""

from __future__ import annotations

import os

import torch

from ..interop.io import check_config_fits, check_fit
from .checkpoint import CheckpointError, load_checkpoint
from .model import SequenceModel
from .train import check_run_meta


def load_model(folder: str | os.PathLike) -> tuple[SequenceModel, dict]:
    """The trained model of a run folder, in eval mode, and the checkpoint's metadata."""
    ckpt = load_checkpoint(folder)
    check_run_meta(ckpt.path, ckpt.meta)
    if "block" in ckpt.meta["model"]:  # sampling carries one network's state step by step
        raise CheckpointError(f"{ckpt.path}: sampling needs a bare-cell run, not a --block model")
    rnn = {k[len("rnn."):]: v for k, v in ckpt.model_state.items() if k.startswith("rnn.")}
    check_config_fits(str(ckpt.weights_path), rnn, ckpt.meta["model"]["rnn"])  # nothing built yet
    with torch.device("meta"):  # shapes and dtypes first, without memory (see interop.io)
        check_fit(str(ckpt.weights_path), ckpt.model_state,
                  SequenceModel.from_config(ckpt.meta["model"]).state_dict())
    model = SequenceModel.from_config(ckpt.meta["model"])
    model.load_state_dict(ckpt.model_state)
    return model.eval(), ckpt.meta


@torch.no_grad()
def sample_from(folder: str | os.PathLike, chars: int = 500, temperature: float = 1.0,
                prime: str = "\n", seed: int = 0) -> str:
    """``prime`` followed by ``chars`` characters drawn from the model in ``folder``."""
    if not 0 < temperature < float("inf") or chars < 0:
        raise ValueError(f"temperature must be a finite number > 0 and chars >= 0, got "
                         f"{temperature} and {chars}")
    model, meta = load_model(folder)
    vocab = meta["task"].get("vocab")
    if not vocab or not model.per_step or model.vocab_size is None:
        raise CheckpointError(f"the checkpoint in {folder} is not a character model "
                              f"(task {meta['task']['name']!r}); train one with --task charlm")
    index = {c: i for i, c in enumerate(vocab)}
    unknown = sorted(set(prime) - set(index))
    if unknown or not prime:
        raise ValueError(f"prime text must be non-empty and use the model's characters; unknown: {unknown}")
    gen = torch.Generator().manual_seed(seed)
    ids = torch.tensor([[index[c] for c in prime]])  # (1, P)
    output, state = model.rnn(model.features(ids))
    logits = model.head(output[:, -1])  # (1, V)
    out = []
    for _ in range(chars):
        probs = torch.softmax(logits / temperature, dim=-1)
        nxt = torch.multinomial(probs, 1, generator=gen)  # (1, 1)
        out.append(vocab[int(nxt)])
        output, state = model.rnn(model.features(nxt), state)
        logits = model.head(output[:, -1])
    return prime + "".join(out)
