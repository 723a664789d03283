"""The one output claim: a folder is taken only when it is free or holds this very kind of result with these settings."""

from __future__ import annotations

import json

import pytest

from stablebptt.runs.rundir import RunDirError, claim_output

SETTINGS = {"epochs": 2, "base": {"seed": 42}}


def claim(out, settings=SETTINGS, **options):
    claim_output(out, marker="thing.json", what="thing", settings=settings, **options)


def test_a_free_folder_is_made_and_marked(tmp_path):
    out = tmp_path / "a" / "b"
    claim(out)
    assert json.loads((out / "thing.json").read_text()) == SETTINGS
    claim(out)  # its own folder: taken again, unchanged
    assert json.loads((out / "thing.json").read_text()) == SETTINGS
    empty = tmp_path / "empty"
    empty.mkdir()
    claim(empty)
    assert (empty / "thing.json").is_file()


def test_a_foreign_folder_is_refused_and_left_alone(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match=r"--out .* is not empty and holds no thing; choose another --out"):
        claim(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="is a file, not a directory"):
        claim(tmp_path / "file")
    with pytest.raises(RunDirError, match="is a file, not a folder"):
        claim(tmp_path / "file" / "below")


def test_other_settings_are_named_and_overwrite_replaces_them(tmp_path):
    claim(tmp_path)
    other = {"epochs": 3, "base": {"seed": 7}}
    with pytest.raises(RunDirError) as err:
        claim(tmp_path, other)
    assert "holds a thing with different settings: base.seed (42 vs 7); epochs (2 vs 3); run the same command" in str(err.value)
    with pytest.raises(RunDirError, match="pass --overwrite to replace it"):
        claim(tmp_path, other, overwrite=False)
    claim(tmp_path, {"epochs": 2, "base": {"seed": 42}, "grid": [2]}, ignore=("grid",), merge=lambda: {**SETTINGS, "grid": [1, 2]})
    assert json.loads((tmp_path / "thing.json").read_text())["grid"] == [1, 2]  # the held settings joined with the new
    claim(tmp_path, other, overwrite=True)
    assert json.loads((tmp_path / "thing.json").read_text()) == other


def test_a_file_place_and_a_plain_folder(tmp_path):
    claim_output(tmp_path / "sub" / "table.md", file=True)
    assert (tmp_path / "sub").is_dir() and not (tmp_path / "sub" / "table.md").exists()
    with pytest.raises(RunDirError, match="is a directory; give a file name"):
        claim_output(tmp_path / "sub", file=True)
    claim_output(tmp_path / "figures")  # no marker: only the place is checked, nothing is made
    assert not (tmp_path / "figures").exists()
