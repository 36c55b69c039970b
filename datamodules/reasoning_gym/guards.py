"""Guards for reasoning-gym scorers that evaluate the model's answer as code.

A few reasoning-gym scorers (reviewed for reasoning-gym 0.1.25, see ``EVAL_SCORERS``) call
Python's ``eval`` on the answer text to accept a Python-list spelling, or ``sympy.parse_expr``
(which also ends in ``eval``) to read a formula. Model output is untrusted, so inside the scorer
process (``datamodules.reasoning_gym.worker``) those names are replaced:

* ``eval`` -> :func:`literal_eval`: the lists and strings those scorers expect, and nothing that runs;
* ``parse_expr`` -> accepted only for :func:`is_safe_expression` text (numbers, names, arithmetic,
  calls of known math functions), then handed to sympy.

Time and memory are bounded by the process itself (a hard kill, an address-space limit), not here.
``tests/test_reasoning_gym.py`` re-reads every registered scorer's source so a new reasoning-gym
version with another evaluating scorer fails the suite instead of evaluating model output.
"""

from __future__ import annotations

import ast
import builtins
import importlib
from typing import Any, Callable

#: Longest text a guard hands on (answers are already bounded by lit_reason.tasks.answer.MAX_ANSWER_CHARS).
MAX_EXPRESSION_CHARS = 8_192

#: task -> (module, name, kind): the evaluating callables each scorer reaches, as reviewed.
EVAL_SCORERS: dict[str, tuple[str, str, str]] = {
    "binary_matrix": ("reasoning_gym.algorithmic.binary_matrix", "eval", "literal"),
    "n_queens": ("reasoning_gym.games.n_queens", "eval", "literal"),
    "number_sorting": ("reasoning_gym.algorithmic.number_sorting", "eval", "literal"),
    "spiral_matrix": ("reasoning_gym.algorithmic.spiral_matrix", "eval", "literal"),
    "string_insertion": ("reasoning_gym.algorithmic.string_insertion", "eval", "literal"),
    "countdown": ("reasoning_gym.games.countdown", "parse_expr", "sympy"),
    "puzzle24": ("reasoning_gym.games.puzzle24", "parse_expr", "sympy"),
    # these three call ``sympy.parse_expr`` / ``sp.parse_expr`` through the sympy module
    "intermediate_integration": ("sympy", "parse_expr", "sympy"),
    "polynomial_multiplication": ("sympy", "parse_expr", "sympy"),
    "simple_integration": ("sympy", "parse_expr", "sympy"),
}

#: Functions a formula may call (sympy spellings of elementary functions).
SAFE_CALLS = frozenset(
    "sin cos tan cot sec csc asin acos atan acot sinh cosh tanh asinh acosh atanh exp log ln sqrt "
    "Abs abs factorial floor ceiling sign Rational Integer".split()
)
_SAFE_BUILTIN_NAMES = frozenset({"abs", "True", "False", "None"})
_UNSAFE_NAMES = frozenset(dir(builtins)) - _SAFE_BUILTIN_NAMES
_SAFE_OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.BitXor,
                   ast.USub, ast.UAdd)


def _safe_node(node: ast.AST) -> bool:
    if isinstance(node, ast.Expression):
        return _safe_node(node.body)
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (int, float, complex)) and not isinstance(node.value, bool)
    if isinstance(node, ast.Name):
        return not node.id.startswith("_") and node.id not in _UNSAFE_NAMES
    if isinstance(node, ast.BinOp):
        return isinstance(node.op, _SAFE_OPERATORS) and _safe_node(node.left) and _safe_node(node.right)
    if isinstance(node, ast.UnaryOp):
        return isinstance(node.op, _SAFE_OPERATORS) and _safe_node(node.operand)
    if isinstance(node, ast.Call):
        return (isinstance(node.func, ast.Name) and node.func.id in SAFE_CALLS and not node.keywords
                and all(not isinstance(a, ast.Starred) and _safe_node(a) for a in node.args))
    return False  # attributes, subscripts, lambdas, comprehensions, strings, f-strings, ...


def is_safe_expression(text: Any) -> bool:
    """Whether ``text`` is a formula with nothing to run: numbers, names (no builtins, no
    underscores), + - * / // % ** ^, and calls of :data:`SAFE_CALLS`. Never raises."""
    if not isinstance(text, str) or len(text) > MAX_EXPRESSION_CHARS or "\x00" in text:
        return False
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    try:
        return _safe_node(tree)
    except RecursionError:
        return False


def literal_eval(text: Any, *_: Any) -> Any:
    """``eval`` for scorers that only want a Python literal (a list of strings, a matrix)."""
    if not isinstance(text, str) or len(text) > MAX_EXPRESSION_CHARS:
        raise ValueError("not a bounded literal")
    return ast.literal_eval(text.strip())


def guarded(parse: Callable[..., Any]) -> Callable[..., Any]:
    """``parse_expr`` that refuses text :func:`is_safe_expression` does not accept."""

    def parse_expr(text: Any, *args: Any, **kwargs: Any) -> Any:
        if not is_safe_expression(text):
            raise ValueError("refused: not a plain formula")
        return parse(text, *args, **kwargs)

    parse_expr.__wrapped__ = parse
    return parse_expr


def install() -> None:
    """Replace the evaluating callables of :data:`EVAL_SCORERS` (call only in the scorer process)."""
    for module_name, name, kind in set(EVAL_SCORERS.values()):
        module = importlib.import_module(module_name)
        if kind == "literal":
            setattr(module, name, literal_eval)
        else:
            current = getattr(module, name)
            if not hasattr(current, "__wrapped__"):
                setattr(module, name, guarded(current))
