"""The training loader that a mid-epoch checkpoint can resume at the next batch (issue 14).

:func:`resumable_loader` builds torchdata's ``StatefulDataLoader``, which Lightning (2.3+) saves in every
checkpoint (``loops.fit_loop.state_dict.combined_loader``) and restores on ``--ckpt_path``: the batches yielded
so far, the shuffle sampler's generator and the worker base seed. :class:`WorkerRNGState` adds what lives in
the worker processes: each worker's torch / numpy / python RNG state, snapshotted with every batch it makes, so
random augmentation in ``__getitem__`` continues where it stopped instead of restarting from the worker seed.
The main process's RNGs are saved by :class:`xclip_pl.callbacks.rng_state.ExactResume`.
"""
from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info
from torchdata.stateful_dataloader import StatefulDataLoader

# torchdata 0.11 calls torch.set_vital on every loader; torch deprecated it (a warning per run, nothing to act on)
warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)


def rng_states() -> dict[str, Any]:
    """The torch CPU, numpy and python RNG states of this process, as types ``torch.load(weights_only=True)``
    reads back (tensors, strings, numbers, lists, tuples)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
            "python": random.getstate()}


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned."""
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


class WorkerRNGState(Dataset):
    """``dataset`` as it is, plus ``state_dict`` / ``load_state_dict`` (torchdata's Stateful protocol) holding
    the RNG states of the DataLoader worker process that calls them. In the main process (``num_workers=0``)
    the state is empty: the main process's RNGs belong to the run, not to the loader.

    Args:
        dataset: the map-style dataset to wrap (indexing and ``len`` are passed through).
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]

    def __getitems__(self, indices: list[int]) -> list[Any]:
        """A batch at once, through the wrapped dataset's ``__getitems__`` when it has one."""
        getitems = getattr(self.dataset, "__getitems__", None)
        return getitems(indices) if getitems is not None else [self.dataset[i] for i in indices]

    def __getattr__(self, name: str) -> Any:  # attributes of the wrapped dataset (records, tokenizer, ...)
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def state_dict(self) -> dict[str, Any]:
        """This worker's RNG states (empty outside a worker)."""
        return {} if get_worker_info() is None else {"rng": rng_states()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore this worker's RNG states (called by torchdata in the worker before its next item)."""
        if state and get_worker_info() is not None:
            set_rng_states(state["rng"])


def resumable_loader(dataset: Dataset, **kwargs: Any) -> StatefulDataLoader:
    """A ``StatefulDataLoader`` over ``WorkerRNGState(dataset)``; ``kwargs`` as for ``torch.utils.data.DataLoader``."""
    return StatefulDataLoader(WorkerRNGState(dataset), **kwargs)
