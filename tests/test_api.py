"""The public API: what `tokenizer` and `worldmodel` export resolves, and importing a light submodule stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import envs
import tokenizer
import worldmodel
from conftest import REPO


@pytest.mark.parametrize("package", [tokenizer, worldmodel, envs], ids=lambda p: p.__name__)
def test_every_exported_name_resolves_and_help_lists_it(package):
    for name in package.__all__:
        assert getattr(package, name) is not None, name
        # help(package) shows the docstring: each export there with its one line.
        assert f"    {name} " in package.__doc__ or f" {name}," in package.__doc__, name
    with pytest.raises(AttributeError, match="no attribute 'Tokeniser'"):
        getattr(package, "Tokeniser")  # noqa: B009 (a literal attribute access would read as dead code)


def test_every_kind_of_world_model_is_known_to_the_base_class():
    from worldmodel.world import WorldModel

    assert set(WorldModel.kinds) == {"deltaworld", "dinoworld"}


def test_a_light_submodule_does_not_load_the_models():
    """tokenizer's exports load on first use: the error types and data configs do not pull in transformers."""
    code = "import sys, tokenizer.runtime.errors, tokenizer.data.config; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_public_class_says_what_it_is():
    import inspect

    for package in (tokenizer, worldmodel, envs):
        for name in package.__all__:
            value = getattr(package, name)
            if inspect.isclass(value):
                assert value.__doc__ and value.__doc__ is not getattr(value.__mro__[1], "__doc__", None), name
