"""The published implementation (github.com/amazon-far/deltatok), imported from a checkout the user supplies.

Its model modules reach for two things this process must not: the DINOv3 ViT-B config on the Hub, which every
model reads as the template of its blocks (`AutoConfig.from_pretrained`), and, through `training.base`, the
Lightning trainer, for a checkpoint loader. `import_published` answers the first with a config built here from a
dict the caller fills before building a model, and the second with a module whose loader refuses, since nothing
here loads a checkpoint. The published code itself is imported from the checkout, never copied here.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

from tokenizer.runtime.errors import ConfigError

# The files this project imports from the checkout: a folder without them is not the published code.
PUBLISHED_FILES = (
    "models/deltatok.py",
    "models/deltaworld.py",
    "models/world.py",
    "models/predictor.py",
    "models/dinov3.py",
    "models/task_heads.py",
)


def check_checkout(root: Path) -> None:
    """One line naming what is missing when `root` is not a checkout of amazon-far/deltatok."""
    missing = [name for name in PUBLISHED_FILES if not (root / name).is_file()]
    if missing:
        raise ConfigError(
            f"{root} is not a checkout of github.com/amazon-far/deltatok ({', '.join(missing)} missing); "
            "pass the folder `git clone https://github.com/amazon-far/deltatok` made"
        )


def _refuse_checkpoint(*args, **kwargs):
    raise ConfigError("the published code was asked to load a checkpoint; nothing here loads one")


def import_published(root: Path) -> dict:
    """Make the checkout's `models` package importable offline; returns the template config dict to fill.

    Each published model built afterwards reads `DINOv3ViTConfig(**template)` where it would read the Hub's
    DINOv3 ViT-B config, so the caller sets the template's sizes before building one.
    """
    check_checkout(root)
    import transformers
    from transformers import DINOv3ViTConfig

    template: dict = {}
    transformers.AutoConfig.from_pretrained = lambda *args, **kwargs: DINOv3ViTConfig(**template)
    trainer = types.ModuleType("training.base")
    trainer.load_sd = _refuse_checkpoint
    sys.modules.setdefault("training", types.ModuleType("training"))
    sys.modules["training.base"] = trainer
    sys.path.insert(0, str(root))
    return template
