"""Car painting: reorder a row of cars, each moving at most K places, to minimise colour changes.

Exact optimum by dynamic programming over positions. At position i only cars i-K..i+K may be
placed, and car i-K must be placed by then (it cannot go further right), so the state is the
position, which cars of that (2K+1)-wide window are already used, and the last colour.
"""

from __future__ import annotations

from functools import lru_cache


def colour_changes(colours: list[int], order: list[int]) -> int:
    """Neighbouring pairs of different colour when the cars stand in ``order`` (0-based ids)."""
    return sum(colours[a] != colours[b] for a, b in zip(order, order[1:]))


def max_displacement(order: list[int]) -> int:
    """Largest |new position - original position| over the cars (0-based ids)."""
    return max((abs(pos - car) for pos, car in enumerate(order)), default=0)


def optimal_order(colours: list[int], k: int) -> tuple[int, list[int]]:
    """(fewest colour changes, one order achieving it) over orders with displacement <= k.

    Window bit b stands for car i-K+b; cars left of the row count as used, so the "car i-K is
    placed" rule needs no special case at the start.
    """
    n = len(colours)
    width = 2 * k + 1

    @lru_cache(maxsize=None)
    def best(i: int, used: int, last: int) -> tuple[int, int]:
        """(cost of filling positions i.., window bit chosen at i); last = -1 before any car."""
        if i == n:
            return 0, -1
        answer = (n + 1, -1)
        for b in range(width):
            car = i - k + b
            if car < 0 or car >= n or used >> b & 1:
                continue
            now = used | 1 << b
            if not now & 1:  # car i-K would be stranded left of its range
                continue
            step = int(last >= 0 and colours[car] != last)
            rest, _ = best(i + 1, now >> 1, colours[car])
            if step + rest < answer[0]:
                answer = (step + rest, b)
        return answer

    start = (1 << k) - 1  # the k imaginary cars left of car 0
    cost, _ = best(0, start, -1)
    order: list[int] = []
    used, last = start, -1
    for i in range(n):
        _, b = best(i, used, last)
        car = i - k + b
        order.append(car)
        used, last = (used | 1 << b) >> 1, colours[car]
    best.cache_clear()
    return cost, order
