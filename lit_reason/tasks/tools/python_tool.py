"""The Python tool: the model's code in the sandbox (:mod:`lit_reason.tasks.tools.sandbox`)."""

from __future__ import annotations

from lit_reason.tasks.tools.sandbox import SandboxLimits, run_python


def python(code: str) -> str:
    """Run Python code in a sandbox (no network, no files outside its own directory) and return what it printed.

    Args:
        code: a Python program; print() what you want to see
    """
    return run_python(code, SandboxLimits()).report()
