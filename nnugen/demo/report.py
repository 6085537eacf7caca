"""The demo's one page: ``nnugen_work/report.html`` and a PNG of it (``report.png``), one section per part with its
tables, pictures, capability checks and the commands that made them.

A capability check is a claim the part must make true on the demo's data, with the number it measured and the bar
it needed (``Check``); a failed check is shown as FAILED at the top of the page and in its section, and
``failed_checks`` lists them for the demo's last line, so a part that does not show its capability never passes
silently. Pictures are linked by their path relative to the report, so the folder can be moved or zipped whole.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path

from nnugen.atomic_files import atomic_write_text, atomic_write_with

REPORT_FILE = "report.html"
REPORT_PICTURE = "report.png"


@dataclass(frozen=True)
class Check:
    """``claim`` (what the part must show, with its bar), ``measured`` (what it got) and whether it ``passed``."""

    claim: str
    measured: str
    passed: bool

    def line(self) -> str:
        return f"{'passed' if self.passed else 'FAILED'}: {self.claim} (measured: {self.measured})"


def at_least(claim: str, value: float, bar: float, unit: str = "") -> Check:
    """A check that ``value >= bar`` (NaN fails), shown with both numbers."""
    return Check(claim, f"{value:.3f}{unit}, needed >= {bar:.3f}{unit}", bool(value >= bar))


@dataclass
class Section:
    """One part of the demo on the page."""

    title: str
    lines: list[str] = field(default_factory=list)
    """Sentences: what was run on what data and what the numbers mean."""
    tables: list[tuple[str, str]] = field(default_factory=list)
    """(caption, plain-text table)."""
    pictures: list[Path] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    numbers: dict[str, float] = field(default_factory=dict)
    """The measured values behind the lines and checks, by name (what ``run_demo`` returns)."""


def failed_checks(sections: list[Section]) -> list[str]:
    """``PART: claim (measured: ...)`` for every failed check."""
    return [f"{section.title}: {check.line()}" for section in sections for check in section.checks
            if not check.passed]


def write_report(work_dir: Path, sections: list[Section], seconds: float) -> Path:
    """Write ``work_dir/report.html`` and ``work_dir/report.png`` (atomically); returns the HTML file."""
    work_dir = Path(work_dir)
    page = work_dir / REPORT_FILE
    atomic_write_text(page, _html(work_dir, sections, seconds))
    _picture(work_dir / REPORT_PICTURE, sections, seconds)
    return page


def _html(work_dir: Path, sections: list[Section], seconds: float) -> str:
    failed = failed_checks(sections)
    verdict = (f"<p class='bad'>{len(failed)} check(s) FAILED:</p><ul>"
               + "".join(f"<li>{html.escape(f)}</li>" for f in failed) + "</ul>") if failed else \
        "<p class='good'>Every capability check passed.</p>"
    body = [f"<h1>nnugen demo</h1><p>{len(sections)} part(s) in {seconds:.0f} s. "
            f"The picture of this page: <a href='{REPORT_PICTURE}'>{REPORT_PICTURE}</a>.</p>", verdict]
    for section in sections:
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        body += [f"<p>{html.escape(line)}</p>" for line in section.lines]
        if section.checks:
            body.append("<ul>" + "".join(
                f"<li class='{'good' if c.passed else 'bad'}'>{html.escape(c.line())}</li>" for c in section.checks)
                + "</ul>")
        for caption, table in section.tables:
            body.append(f"<p>{html.escape(caption)}</p><pre>{html.escape(table)}</pre>")
        for picture in section.pictures:
            link = html.escape(os.path.relpath(picture, work_dir))
            body.append(f"<p><img src='{link}' alt='{link}'><br><code>{link}</code></p>")
        if section.commands:
            body.append("<details><summary>commands</summary><pre>"
                        + html.escape("\n".join(section.commands)) + "</pre></details>")
    style = ("body{font-family:sans-serif;max-width:70em;margin:2em auto}pre{background:#f4f4f4;padding:.5em;"
             "overflow-x:auto}.good{color:#1a7f37}.bad{color:#c62828;font-weight:bold}img{max-width:100%}")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>nnugen demo</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def _picture(path: Path, sections: list[Section], seconds: float) -> None:
    """The page as one PNG: per section its title, checks and tables as text, then its pictures."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    blocks: list[tuple[str, object]] = [("text", f"nnugen demo: {len(sections)} part(s) in {seconds:.0f} s")]
    for section in sections:
        # monospace at 8 pt fills the 10-inch page at about 140 characters: longer check lines wrap
        text = [section.title, *(textwrap.fill(check.line(), 140, subsequent_indent="    ")
                                 for check in section.checks)]
        for caption, table in section.tables:
            text += [caption, table]
        blocks.append(("text", "\n".join(text)))
        blocks += [("image", mpimg.imread(str(picture))) for picture in section.pictures if picture.is_file()]
    width = 10.0
    heights = [0.16 * (block.count("\n") + 1) + 0.15 if kind == "text" else width * block.shape[0] / block.shape[1]
               for kind, block in blocks]
    figure, axes = plt.subplots(len(blocks), 1, figsize=(width, sum(heights)),
                                gridspec_kw={"height_ratios": heights}, squeeze=False)
    for axis, (kind, block) in zip(axes[:, 0], blocks):
        axis.set_axis_off()
        if kind == "text":
            axis.text(0, 1, block, va="top", ha="left", family="monospace", fontsize=8, transform=axis.transAxes)
        else:
            axis.imshow(block)
    figure.subplots_adjust(left=0.01, right=0.99, top=0.995, bottom=0.005, hspace=0.05)
    atomic_write_with(path, lambda tmp: figure.savefig(tmp, format="png", dpi=80), suffix=".png")
    plt.close(figure)
