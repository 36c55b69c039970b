"""List functions in the style of BIG-bench's list_functions, from a small composable family.

A hidden function is a composition of ``depth`` primitive operations on integer lists. The
question shows input -> output examples; the answer is the function applied to a query list.
:func:`query_outputs` enumerates every composition of at most ``depth`` primitives that agrees
with the examples and collects what they return on the query, so a generator can keep only
instances where the examples pin the answer down (exactly one possible query output).
"""

from __future__ import annotations

import random
from typing import Callable

IntList = tuple[int, ...]
Primitive = tuple[str, Callable[[IntList], IntList]]


def _dedupe(xs: IntList) -> IntList:
    seen: set[int] = set()
    out = []
    for x in xs:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return tuple(out)


def _family() -> list[Primitive]:
    """The primitives in a fixed order (their index is the function's identity)."""
    ops: list[Primitive] = []
    for k in range(1, 6):
        ops.append((f"add {k}", lambda xs, k=k: tuple(x + k for x in xs)))
    for k in (2, 3):
        ops.append((f"multiply by {k}", lambda xs, k=k: tuple(x * k for x in xs)))
    ops.append(("keep even", lambda xs: tuple(x for x in xs if x % 2 == 0)))
    ops.append(("keep odd", lambda xs: tuple(x for x in xs if x % 2)))
    for k in range(2, 8):
        ops.append((f"keep greater than {k}", lambda xs, k=k: tuple(x for x in xs if x > k)))
    ops.append(("reverse", lambda xs: xs[::-1]))
    ops.append(("sort ascending", lambda xs: tuple(sorted(xs))))
    ops.append(("sort descending", lambda xs: tuple(sorted(xs, reverse=True))))
    for n in range(1, 4):
        ops.append((f"take first {n}", lambda xs, n=n: xs[:n]))
    for n in range(1, 4):
        ops.append((f"drop first {n}", lambda xs, n=n: xs[n:]))
    ops.append(("remove duplicates", _dedupe))
    for c in range(10):
        ops.append((f"append {c}", lambda xs, c=c: xs + (c,)))
    for c in range(10):
        ops.append((f"prepend {c}", lambda xs, c=c: (c,) + xs))
    return ops


PRIMITIVES: list[Primitive] = _family()

#: The family as the prompt states it (one line per kind of operation).
FAMILY_TEXT = """\
- add k to every element (k = 1 to 5)
- multiply every element by k (k = 2 or 3)
- keep only the even elements / keep only the odd elements
- keep only the elements greater than k (k = 2 to 7)
- reverse the list
- sort ascending / sort descending
- keep the first n elements (n = 1 to 3; a shorter list stays as it is)
- remove the first n elements (n = 1 to 3; a shorter list becomes empty)
- remove duplicates, keeping the first occurrence of each value
- append c at the end (c = 0 to 9)
- insert c at the front (c = 0 to 9)"""


def apply_chain(chain: list[int], xs: IntList) -> IntList:
    """Apply the primitives with indexes ``chain`` in order (first one first)."""
    for index in chain:
        xs = PRIMITIVES[index][1](xs)
    return xs


def query_outputs(examples: list[tuple[IntList, IntList]], query: IntList, depth: int) -> set[IntList]:
    """Every query output of a composition of at most ``depth`` primitives matching ``examples``.

    Compositions are grouped by their values on all inputs (examples + query), so each distinct
    behaviour is extended once; the last level only checks the examples, stopping at the first
    mismatch, which keeps depth 2 to a few thousand cheap list operations.
    """
    inputs = tuple(x for x, _ in examples) + (query,)
    targets = tuple(y for _, y in examples)
    m = len(targets)
    if m == 0:
        raise ValueError("query_outputs needs at least one example")
    found: set[IntList] = set()
    frontier = [inputs]
    seen = {inputs}
    if inputs[:m] == targets:
        found.add(query)
    for level in range(1, depth + 1):
        grown = []
        for values in frontier:
            for _, fn in PRIMITIVES:
                if level == depth:
                    if fn(values[0]) == targets[0] and all(fn(values[j]) == targets[j] for j in range(1, m)):
                        found.add(fn(values[m]))
                    continue
                image = tuple(fn(v) for v in values)
                if image not in seen:
                    seen.add(image)
                    grown.append(image)
                    if image[:m] == targets:
                        found.add(image[m])
        frontier = grown
    return found


def random_list(rng: random.Random, min_len: int, max_len: int) -> IntList:
    return tuple(rng.randint(0, 9) for _ in range(rng.randint(min_len, max_len)))


def format_list(xs: IntList) -> str:
    return "[" + ", ".join(str(x) for x in xs) + "]"


def parse_list(body: str, max_items: int = 64) -> IntList | None:
    """``[a, b, ...]`` of integers (``[]`` empty); None for anything else."""
    text = body.strip()
    if len(text) > 8 * max_items + 16 or len(text) < 2 or text[0] != "[" or text[-1] != "]":
        return None
    inner = text[1:-1].strip()
    if not inner:
        return ()
    items = inner.split(",")
    if len(items) > max_items:
        return None
    out = []
    for item in items:
        item = item.strip()
        digits = item[1:] if item.startswith("-") else item
        if not digits.isdigit() or not digits.isascii() or len(digits) > 6:
            return None
        out.append(int(item))
    return tuple(out)
