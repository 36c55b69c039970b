"""Stack permutations: which outputs a single stack can produce from a fixed input order.

With distinct numbers the push/pop sequence is forced: when the top of the stack is the next
number wanted it must be popped now (burying it would block it forever), otherwise the next
input must be pushed. So the greedy simulation is an exact solver and the answer is unique.
"""

from __future__ import annotations

import random

PUSH, POP = "push", "pop"


def run_operations(inputs: list[int], operations: list[str]) -> list[int] | None:
    """The output of ``operations``; None on a pop from an empty stack, a push with no input
    left, an unknown operation, or numbers left over on the stack or in the input."""
    stack: list[int] = []
    output: list[int] = []
    pending = 0
    for op in operations:
        if op == PUSH and pending < len(inputs):
            stack.append(inputs[pending])
            pending += 1
        elif op == POP and stack:
            output.append(stack.pop())
        else:
            return None
    if stack or pending < len(inputs):
        return None
    return output


def solve(inputs: list[int], target: list[int]) -> list[str] | None:
    """The unique operation sequence producing ``target`` from ``inputs``, or None."""
    stack: list[int] = []
    operations: list[str] = []
    pending = 0
    for wanted in target:
        while not stack or stack[-1] != wanted:
            if pending == len(inputs):
                return None
            stack.append(inputs[pending])
            pending += 1
            operations.append(PUSH)
        stack.pop()
        operations.append(POP)
    return operations if pending == len(inputs) and not stack else None


def random_operations(n: int, rng: random.Random) -> list[str]:
    """A uniformly random choice at each step among the legal operations (n pushes, n pops)."""
    operations: list[str] = []
    pushed = height = 0
    while len(operations) < 2 * n:
        can_push, can_pop = pushed < n, height > 0
        if can_push and (not can_pop or rng.random() < 0.5):
            operations.append(PUSH)
            pushed += 1
            height += 1
        else:
            operations.append(POP)
            height -= 1
    return operations
