"""How every nnugen CLI reports bad input: one line on stderr, ``PROG: error: ...``, and exit code 1
(argparse's own usage errors keep exit code 2). Tracebacks are for bugs, not for the user's input."""

from __future__ import annotations

import sys
from collections.abc import Callable


def run_reporting_errors(prog: str, body: Callable[[], int], expected: tuple[type[BaseException], ...]) -> int:
    try:
        return body()
    except expected as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
