"""An exponential moving average of the trained weights: what validation scores and the final weights hold.

Each optimizer step moves the average toward the weights by 1 - d, with d = min(decay, (1 + n) / (10 + n))
after n updates (the warm-up of TensorFlow's and timm's averages), so the first steps, far from the end
point, are forgotten quickly. The warm-up reaches a decay of 0.99 after about 900 updates and 0.999 after
about 9,000: a shorter run averages with the warm-up's decay, whatever the cap. Checkpoints keep the raw
weights for the optimizer and the average beside them in `ema.safetensors`, so a resumed run continues both.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from tokenizer.runtime.errors import CheckpointError
from tokenizer.runtime.files import check_state_dict, save_safetensors

EMA_FILE = "ema.safetensors"


class EMA:
    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        params = {name: p for name, p in module.named_parameters() if p.requires_grad}
        self.average = {name: p.detach().clone() for name, p in params.items()}  # by name, for checkpoints
        # Flat lists in the same order, built once: the per-step update and the final copy are one foreach call each.
        self._params, self._averages = list(params.values()), list(self.average.values())

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        weight = 1.0 - self.current_decay()
        torch._foreach_lerp_(self._averages, self._params, weight)
        self.updates += 1

    @torch.no_grad()
    def copy_to_module(self) -> None:
        """Replace the trained weights by the average for good (the end of a run)."""
        torch._foreach_copy_(self._params, self._averages)

    @torch.no_grad()
    def _swap(self) -> None:
        """Exchange the module's weights and the average, one tensor at a time (one tensor of extra memory)."""
        for param, average in zip(self._params, self._averages):
            trained = param.detach().clone()
            param.copy_(average)
            average.copy_(trained)

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The average in the module for the duration (a validation mid-run), the trained weights restored after."""
        self._swap()
        try:
            yield
        finally:
            self._swap()

    def save(self, folder: Path) -> None:
        save_safetensors({**self.average, "_updates": torch.tensor(self.updates)}, folder / EMA_FILE)

    def load(self, folder: Path, checksummed: Iterable[str]) -> bool:
        """Restore from a checkpoint folder whose state.json checksums `checksummed`; False when it holds no average
        (a run begun without one)."""
        if EMA_FILE not in checksummed:
            return False
        path = folder / EMA_FILE
        tensors = load_file(str(path))
        updates = tensors.pop("_updates", None)
        check_state_dict(self.average, tensors, f"weight average {path}")
        if updates is None:
            raise CheckpointError(
                f"weight average {path} does not say how many steps it averages; start a new output_dir"
            )
        with torch.no_grad():
            for name, value in tensors.items():
                self.average[name].copy_(value)
        self.updates = int(updates)
        return True
