"""The demo's page (report.py) and its pictures (pictures.py): every picture it shows is named and linked, a failed
capability check is said at the top and in its section, and a picture shows the slice a mask covers most."""

import re
from pathlib import Path

import numpy as np
import pytest

from nnugen.demo.pictures import Panel, as_slice, busiest_slice, write_picture
from nnugen.demo.report import Check, Section, at_least, failed_checks, write_report


def _picture(path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = [[Panel(rng.random((20, 24)), "image"), Panel(rng.integers(0, 3, (20, 24)), "label", "label"),
             Panel(rng.random((20, 24)), "map", "map")],
            [Panel(rng.random((20, 24)) > 0.5, "errors", "errors")]]
    return write_picture(rows, path, "a grid")


def test_the_page_links_every_picture_and_lists_checks_tables_and_commands(tmp_path):
    pictures = [_picture(tmp_path / "pictures" / f"{name}.png") for name in ("one", "two")]
    sections = [Section("Part A", lines=["what ran"], tables=[("Dice", "class  a\norgan  0.9")],
                        pictures=pictures[:1], checks=[at_least("organ found", 0.9, 0.5)],
                        commands=["nnugen_train 1 0 2d --task seg"]),
                Section("Part B", pictures=pictures[1:], checks=[Check("noise beaten", "0.1 vs 1", True)])]
    page = write_report(tmp_path, sections, seconds=12.0)

    text = page.read_text(encoding="utf-8")
    assert page == tmp_path / "report.html"
    assert sorted(re.findall(r"<img src='([^']+)'", text)) == ["pictures/one.png", "pictures/two.png"]
    assert all((tmp_path / link).is_file() for link in re.findall(r"<img src='([^']+)'", text))
    assert "Every capability check passed." in text and "FAILED" not in text
    assert "nnugen_train 1 0 2d --task seg" in text and "organ  0.9" in text and "in 12 s" in text
    assert "passed: organ found (measured: 0.900, needed &gt;= 0.500)" in text
    import matplotlib.image as mpimg

    picture = mpimg.imread(str(tmp_path / "report.png"))
    assert picture.ndim == 3 and picture.shape[0] > picture.shape[1] > 500  # the page: text and both pictures


def test_a_failed_check_is_said_at_the_top_and_in_its_section(tmp_path):
    sections = [Section("Anomaly", checks=[at_least("lesions above chance (AUPRC / prevalence)", 1.4, 3.0, "x"),
                                           at_least("Dice", 0.3, 0.2)]),
                Section("Generation", checks=[at_least("labels match", float("nan"), 0.5)])]
    assert failed_checks(sections) == [
        "Anomaly: FAILED: lesions above chance (AUPRC / prevalence) (measured: 1.400x, needed >= 3.000x)",
        "Generation: FAILED: labels match (measured: nan, needed >= 0.500)"]
    text = write_report(tmp_path, sections, seconds=1.0).read_text(encoding="utf-8")
    top = text.index("2 check(s) FAILED")
    assert top < text.index("<h2>Anomaly</h2>")
    assert text.count("FAILED: lesions above chance") == 2 and "passed: Dice" in text
    assert "Every capability check passed." not in text


def test_the_busiest_slice_is_where_the_mask_covers_most():
    mask = np.zeros((5, 8, 8), bool)
    mask[1, :2] = True
    mask[3, :4] = True
    assert busiest_slice(mask) == 3 and busiest_slice(np.zeros((6, 4, 4), bool)) == 3
    volume = np.arange(5 * 8 * 8).reshape(5, 8, 8)
    np.testing.assert_array_equal(as_slice(volume, 3), volume[3])
    # (1, y, x): a 2D case as nnU-Net reads it
    np.testing.assert_array_equal(as_slice(volume[None, 2], None), volume[2])


@pytest.mark.parametrize("panel, message", [(lambda: Panel(np.zeros((2, 3, 4)), "v"), "give a 2D slice"),
                                            (lambda: Panel(np.zeros((3, 4)), "v", "colour"), "choose one of")])
def test_a_panel_that_cannot_be_drawn_is_refused(panel, message):
    with pytest.raises(ValueError, match=message):
        panel()
