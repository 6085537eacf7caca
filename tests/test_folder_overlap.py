"""nnugen/folders/overlap.py: the one test behind the "output overlaps what is read" refusals."""

from __future__ import annotations

from nnugen.folders.overlap import overlap


def test_each_relation_and_links_count_as_their_target(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "out").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "in")
    assert overlap(tmp_path / "in", tmp_path / "in") == "same"
    assert overlap(tmp_path / "link", tmp_path / "in") == "same"
    assert overlap(tmp_path / "in" / "../in", tmp_path / "in") == "same"
    assert overlap(tmp_path / "in" / "sub", tmp_path / "in") == "inside"
    assert overlap(tmp_path / "in", tmp_path / "in" / "sub") == "holds"
    assert overlap(tmp_path / "out", tmp_path / "in") is None
    assert overlap(tmp_path / "inner", tmp_path / "in") is None  # a name that starts alike is not inside
