"""How a user gets the reference checks to run: `benchmarks.reference_vectors` refuses a folder that is not the
published code, and the tests find the vectors it writes. (Making them needs the published checkout, so that is
run by hand, as README says, not here.)"""

from __future__ import annotations

import contextlib
import io

import pytest
import torch

import reference_files
from benchmarks import reference_vectors
from tokenizer.runtime.cli import run_cli


def test_a_folder_that_is_not_the_published_checkout_is_refused_in_one_line(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "deltatok.py").write_text("")  # half a checkout is not one either
    out = tmp_path / "out"
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exit:
        run_cli(lambda: reference_vectors.main(["--published", str(tmp_path), "--out", str(out)]))
    assert exit.value.code == 2
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 1 and "not a checkout of github.com/amazon-far/deltatok" in lines[0], lines
    assert "models/deltaworld.py" in lines[0] and "models/deltatok.py" not in lines[0]
    assert not out.exists()


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """An empty tests/reference/ and CI folder in tmp_path, and no $DELTAWORLD_REFERENCE_DIR."""
    monkeypatch.setattr(reference_files, "IN_REPO", tmp_path / "in_repo")
    monkeypatch.setattr(reference_files, "CI", tmp_path / "ci")
    monkeypatch.delenv(reference_files.ENV, raising=False)
    for folder in ("in_repo", "ci", "mine"):
        (tmp_path / folder).mkdir()
    return tmp_path


def write_vectors(folder, value: float) -> None:
    torch.save({"features": torch.full((2, 3), value)}, folder / reference_vectors.DELTATOK_FILE)


def test_the_folder_the_variable_names_is_read_and_only_it(folders, monkeypatch):
    write_vectors(folders / "ci", 0.0)
    write_vectors(folders / "mine", 1.0)
    monkeypatch.setenv(reference_files.ENV, str(folders / "mine"))
    assert reference_files.load_reference(reference_vectors.DELTATOK_FILE)["features"].eq(1.0).all()
    # Set, the variable is the only place looked: a file missing there is missing, not taken from elsewhere.
    with pytest.raises(pytest.skip.Exception, match="not found in .*mine; make them with `python -m benchmarks"):
        reference_files.load_reference(reference_vectors.HEADS_FILE)


def test_the_command_s_default_folder_comes_before_ci_s(folders):
    with pytest.raises(pytest.skip.Exception, match="benchmarks.reference_vectors --published"):
        reference_files.load_reference(reference_vectors.DELTATOK_FILE)
    write_vectors(folders / "ci", 0.0)
    assert (
        reference_files.find_reference(reference_vectors.DELTATOK_FILE) == folders / "ci" / "deltatok_reference_tiny.pt"
    )
    write_vectors(folders / "in_repo", 2.0)
    assert reference_files.load_reference(reference_vectors.DELTATOK_FILE)["features"].eq(2.0).all()


def test_the_command_writes_where_the_tests_look():
    assert reference_vectors.DEFAULT_OUT == reference_files.IN_REPO
