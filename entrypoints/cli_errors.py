"""How every nnugen CLI reports bad input: one line on stderr, ``PROG: error: ...``, and an exit code that says what
kind of problem it was. Tracebacks are for bugs, not for the user's input.

Exit codes (README "Exit codes", docs/reliability.md):

- 0: done.
- 1: bad input or a refusal (a missing file, a wrong flag value, an output folder that would be overwritten, a
  checkpoint that does not load, a write that failed).
- 2: a malformed settings or side file (``MalformedFileError``: the plans' nnugen section, denoiser.json,
  autoencoder.json, latent.json, threshold.json, sampling.json), or a usage error (argparse's own).
- 130: interrupted (Ctrl-C).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from nnugen.typed_section import MalformedFileError

EXIT_OK, EXIT_REFUSED, EXIT_MALFORMED, EXIT_INTERRUPTED = 0, 1, 2, 130


def run_reporting_errors(prog: str, body: Callable[[], int], expected: tuple[type[BaseException], ...]) -> int:
    """``body()``'s exit code; an ``expected`` error is one line on stderr and exit code 1, or 2 for a
    ``MalformedFileError``; Ctrl-C is one line and 130."""
    try:
        return body()
    except expected as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        _say(f"{prog}: error: {message}")
        return EXIT_MALFORMED if isinstance(error, MalformedFileError) else EXIT_REFUSED
    except KeyboardInterrupt:
        _say(f"{prog}: interrupted")
        return EXIT_INTERRUPTED


def _say(line: str) -> None:
    """``line`` and its newline in one write: the ranks of a torchrun share stderr, and ``print`` writes the text and
    its end separately, so two ranks' lines could run together."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
