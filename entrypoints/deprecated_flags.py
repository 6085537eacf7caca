"""Old spellings of nnugen's flags, accepted for one release with one line on stderr each, ``PROG: OLD is
deprecated, use NEW``. Every command registers its old spellings here, so they all go in the same release.

The rule they give way to (docs/cli.md, "Flags"): flags copied from nnU-Net are spelled as nnU-Net spells them
(``-p PLANS``, ``-device``, ``--c``); nnugen's own flags are ``--long-dashed``."""

from __future__ import annotations

import argparse
import sys

PLANS_HELP = "plans identifier, as in nnU-Net (default {default})"


def note(prog: str, message: str) -> None:
    """The one line a deprecated spelling gets on stderr."""
    print(f"{prog}: {message}", file=sys.stderr)


class _OldSpelling(argparse.Action):
    """An old option string of a flag: stores into the new flag's ``dest`` and notes the new spelling."""

    def __init__(self, option_strings, dest, replacement: str, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.replacement = replacement

    def __call__(self, parser, namespace, values, option_string=None):
        note(parser.prog, f"{option_string} is deprecated, use {self.replacement}")
        setattr(namespace, self.dest, values)


def add_old_spelling(parser: argparse.ArgumentParser, old: str, new: str, dest: str, **kwargs) -> None:
    """Accept ``old`` as ``new`` (same ``dest``, same ``type``), hidden from ``--help``."""
    parser.add_argument(old, dest=dest, action=_OldSpelling, replacement=new, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS, **kwargs)


class _PlansOrOldProgress(argparse.Action):
    """``-p PLANS`` is the plans identifier; a bare ``-p`` (the progress switch before) turns ``progress`` on."""

    def __call__(self, parser, namespace, values, option_string=None):
        if values is None:
            note(parser.prog, f"{option_string} without a value is deprecated, use --progress ({option_string} PLANS "
                              "is the plans identifier, as in nnU-Net; from the next release it needs the value)")
            namespace.progress = True
        else:
            setattr(namespace, self.dest, values)


def add_plans_and_progress(parser: argparse.ArgumentParser, default: str, progress_help: str) -> None:
    """``-p PLANS`` (dest ``plans``) and ``--progress`` (dest ``progress``) of a command whose ``-p`` was the
    progress switch."""
    parser.add_argument("-p", dest="plans", nargs="?", default=default, action=_PlansOrOldProgress, metavar="PLANS",
                        help=PLANS_HELP.format(default=default))
    parser.add_argument("--progress", action="store_true", help=progress_help)
