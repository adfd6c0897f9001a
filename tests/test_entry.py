"""The interpreter check that runs before anything else in the zipapp."""

from __future__ import annotations

import sys

import pytest

from dragonfly import _entry


def test_this_interpreter_is_fine() -> None:
    assert _entry.interpreter_problem() is None


def test_wrong_python_version_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_entry, "_build_record",
                        lambda: {"python": [3, 12], "implementation": "cpython",
                                 "machine": "x86_64"})
    problem = _entry.interpreter_problem()
    assert problem is not None
    assert "needs cpython 3.12" in problem and sys.executable in problem


def test_wrong_architecture_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_entry, "_build_record",
                        lambda: {"python": list(sys.version_info[:2]),
                                 "implementation": sys.implementation.name,
                                 "machine": "riscv128"})
    problem = _entry.interpreter_problem()
    assert problem is not None and "built for riscv128" in problem


def test_main_exits_with_the_sentence(monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(_entry, "interpreter_problem", lambda: "no good")
    with pytest.raises(SystemExit) as exit_info:
        _entry.main()
    assert exit_info.value.code == 3
    assert capsys.readouterr().err == "dragonfly: no good\n"
