"""An exponential moving average of the trained weights: what validation scores and the final weights hold.

Each optimizer step moves the average toward the weights by 1 - d, with d = min(decay, (1 + n) / (10 + n))
after n updates, so the first steps, far from the end point, are forgotten quickly (the usual warm-up of
DiT-style training). Checkpoints keep the raw weights for the optimizer and the average beside them in
`ema.safetensors`, so a resumed run continues both.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file
from torch import nn

from tokenizer.runtime.errors import CheckpointError
from tokenizer.runtime.files import save_safetensors

EMA_FILE = "ema.safetensors"


class EMA:
    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.params = {name: p for name, p in module.named_parameters() if p.requires_grad}
        self.average = {name: p.detach().clone() for name, p in self.params.items()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        weight = 1.0 - self.current_decay()
        torch._foreach_lerp_(list(self.average.values()), [p.detach() for p in self.params.values()], weight)
        self.updates += 1

    @torch.no_grad()
    def copy_to_module(self) -> None:
        """Replace the trained weights by the average for good (the end of a run)."""
        for name, p in self.params.items():
            p.copy_(self.average[name])

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The average in the module for the duration (a validation mid-run), the trained weights restored after."""
        trained = {name: p.detach().clone() for name, p in self.params.items()}
        self.copy_to_module()
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in self.params.items():
                    p.copy_(trained[name])

    def save(self, folder: Path) -> None:
        save_safetensors({**self.average, "_updates": torch.tensor(self.updates)}, folder / EMA_FILE)

    def load(self, folder: Path) -> bool:
        """Restore from a checkpoint folder; False when it holds no average (a run begun without one)."""
        path = folder / EMA_FILE
        if not path.is_file():
            return False
        tensors = load_file(str(path))
        updates = tensors.pop("_updates", None)
        if updates is None or tensors.keys() != self.average.keys() or any(tensors[k].shape != v.shape for k, v in self.average.items()):
            raise CheckpointError(f"{path} does not hold an average of this model's parameters; start a new output_dir")
        with torch.no_grad():
            for name, value in tensors.items():
                self.average[name].copy_(value)
        self.updates = int(updates)
        return True
