"""The exit codes every nnugen CLI shares (``entrypoints/cli_errors.py``, docs/cli.md): 1 for bad input and
refusals, 2 for a malformed settings or side file (``MalformedFileError``, a ValueError subclass, so code catching
ValueError still catches it), 130 for Ctrl-C; the message is the error's first line, ``PROG: error: ...``."""

from __future__ import annotations

import pytest
from nnugen.entrypoints.cli_errors import run_reporting_errors

from nnugen.typed_section import MalformedFileError


def _raise(error: BaseException):
    def body() -> int:
        raise error
    return body


@pytest.mark.parametrize("error, code, line", [
    (ValueError("-o X is -i X; choose another"), 1, "prog: error: -o X is -i X; choose another"),
    (OSError("could not write x: disk full"), 1, "prog: error: could not write x: disk full"),
    (MalformedFileError("a/sampling.json: seed: expected int, got 'x'; fix"), 2,
     "prog: error: a/sampling.json: seed: expected int, got 'x'; fix"),
    (MalformedFileError("3d_fullres.nnugen: expected a mapping\nsecond line"), 2,
     "prog: error: 3d_fullres.nnugen: expected a mapping"),
    (ValueError(""), 1, "prog: error: ValueError"),
    (KeyboardInterrupt(), 130, "prog: interrupted"),
])
def test_each_kind_of_error_has_its_exit_code_and_one_line(capsys, error, code, line):
    assert run_reporting_errors("prog", _raise(error), (ValueError, OSError)) == code
    assert capsys.readouterr().err.splitlines() == [line]


def test_a_malformed_file_is_a_value_error_and_success_is_zero(capsys):
    assert issubclass(MalformedFileError, ValueError)
    assert run_reporting_errors("prog", lambda: 0, (ValueError,)) == 0
    assert capsys.readouterr().err == ""
    with pytest.raises(TypeError):  # not an expected error: a bug, left to Python's traceback
        run_reporting_errors("prog", _raise(TypeError("bug")), (ValueError,))
