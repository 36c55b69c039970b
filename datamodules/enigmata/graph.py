"""Enigmata Graph tasks: hamiltonian_cycle, hamiltonian_path, natural_language_navigation, maze.

Every verifier checks the rules on the model's answer (any Hamiltonian cycle, any shortest
route, any legal maze path scores 1); "no solution" is accepted only for instances that are
unsolvable by construction (Hamiltonian) or by breadth-first search (maze).
"""

from __future__ import annotations

import random
from collections import deque

from datamodules.enigmata.base import NO_SOLUTION, Puzzle, Task, register
from datamodules.enigmata.search_parsing import (
    format_coordinates,
    is_no_solution,
    parse_coordinates,
    parse_int_sequence,
    parse_word_sequence,
)
from lit_reason.tasks.answer import extract_answer

# --------------------------------------------------------------------------------------------
# Hamiltonian cycle / path
# --------------------------------------------------------------------------------------------


def _random_edges(rng: random.Random, pairs: list[tuple[int, int]], probability: float) -> set[tuple[int, int]]:
    return {pair for pair in pairs if rng.random() < probability}


def _norm(u: int, v: int) -> tuple[int, int]:
    return (u, v) if u < v else (v, u)


def _fill_to_density(rng: random.Random, n: int, edges: set, allowed, density: float) -> None:
    """Add random edges among ``allowed`` pairs until about ``density`` of all pairs are edges."""
    free = [p for p in allowed if p not in edges]
    want = int(density * n * (n - 1) / 2) - len(edges)
    if want > 0 and free:
        edges.update(_random_edges(rng, free, min(1.0, want / len(free))))


def _all_pairs(nodes) -> list[tuple[int, int]]:
    nodes = sorted(nodes)
    return [(a, b) for i, a in enumerate(nodes) for b in nodes[i + 1 :]]


def _impossible_hamiltonian(rng: random.Random, n: int, density: float, cycle: bool) -> tuple[set, str]:
    """A graph with no Hamiltonian cycle (``cycle``) or path, by one of these provable arguments:

    * bipartite with unequal sides: a cycle alternates sides, so it needs |A| = |B|; a path needs
      the sides to differ by at most one (we use a difference of >= 1 for cycles, >= 2 for paths);
    * a cut vertex (cycles) / a vertex whose removal leaves 3 components (paths): removing one
      vertex from a Hamiltonian cycle leaves one path, from a Hamiltonian path at most two;
    * a vertex of degree 1 (cycles) / three vertices of degree 1 (paths): such vertices can only
      be endpoints of a path, and a cycle has none.
    """
    order = rng.sample(range(n), n)
    kind = rng.choice(["bipartite", "cut_vertex", "pendant"])
    edges: set = set()
    if kind == "bipartite":
        small = max(1, n // 2 - (1 if cycle else 1 + (n % 2 == 0)) - rng.randint(0, 1))
        side_a, side_b = order[:small], order[small:]
        cross = [_norm(a, b) for a in side_a for b in side_b]
        _fill_to_density(rng, n, edges, cross, density)
        # keep every node reachable so the instance does not look trivially broken
        for b in side_b:
            if not any(b in e for e in edges):
                edges.add(_norm(b, rng.choice(side_a)))
        for a in side_a:
            if not any(a in e for e in edges):
                edges.add(_norm(a, rng.choice(side_b)))
    elif kind == "cut_vertex":
        hub, rest = order[0], order[1:]
        parts = 2 if cycle else 3
        cuts = sorted(rng.sample(range(1, len(rest)), parts - 1))
        groups = [rest[a:b] for a, b in zip([0, *cuts], [*cuts, len(rest)])]
        for group in groups:
            block = [hub, *group]
            _fill_to_density(rng, len(block), edges, _all_pairs(block), max(density, 0.5))
            for v in group:  # every block touches the hub and is connected to it
                if not any(v in e for e in edges):
                    edges.add(_norm(v, hub))
            edges.add(_norm(hub, group[0]))
            for a, b in zip(group, group[1:]):
                edges.add(_norm(a, b))
    else:
        leaves = order[: 1 if cycle else 3]
        core = order[len(leaves) :]
        for a, b in zip(core, core[1:]):
            edges.add(_norm(a, b))
        _fill_to_density(rng, n, edges, _all_pairs(core), density)
        for leaf in leaves:
            edges.add(_norm(leaf, rng.choice(core)))
    return edges, kind


def hamiltonian_exists(n: int, edges, cycle: bool) -> bool:
    """Exact test by bitmask dynamic programming over (visited set, end node); O(2^n * n^2).

    Used by the tests to confirm the unsolvable constructions on small graphs (n <= ~16).
    """
    adjacency = [0] * n
    for u, v in edges:
        adjacency[u] |= 1 << v
        adjacency[v] |= 1 << u
    full = (1 << n) - 1
    # ends[mask] = bitmask of nodes where a simple path covering exactly ``mask`` can end; a cycle
    # may start anywhere, so it is fixed to start at node 0, a path starts at every node at once.
    ends = {1: 1} if cycle else {1 << v: 1 << v for v in range(n)}
    for _ in range(n - 1):
        nxt: dict[int, int] = {}
        for mask, end_bits in ends.items():
            while end_bits:
                low = end_bits & -end_bits
                end_bits ^= low
                step = adjacency[low.bit_length() - 1] & ~mask
                while step:
                    w = step & -step
                    step ^= w
                    nxt[mask | w] = nxt.get(mask | w, 0) | w
        ends = nxt
    return full in ends and (not cycle or bool(ends[full] & adjacency[0]))


def check_hamiltonian(sequence: list[int], n: int, edges: set, cycle: bool) -> bool:
    """True if ``sequence`` lists every node once and consecutive nodes (and the closing pair,
    for a cycle) are edges. A cycle may repeat its first node at the end."""
    if cycle and len(sequence) == n + 1 and sequence[0] == sequence[-1]:
        sequence = sequence[:-1]
    if len(sequence) != n or sorted(sequence) != list(range(n)):
        return False
    steps = list(zip(sequence, sequence[1:]))
    if cycle:
        steps.append((sequence[-1], sequence[0]))
    return all(_norm(u, v) in edges for u, v in steps)


class _Hamiltonian(Task):
    """Shared generator: plant a Hamiltonian cycle/path under random edges, or build a graph that
    provably has none (see :func:`_impossible_hamiltonian`) with probability ``no_solution_rate``."""

    category = "Graph"
    cycle: bool
    presets = {
        "easy": {"nodes_min": 10, "nodes_max": 15, "density": 0.2, "no_solution_rate": 0.15},
        "medium": {"nodes_min": 15, "nodes_max": 20, "density": 0.3, "no_solution_rate": 0.15},
        "hard": {"nodes_min": 20, "nodes_max": 25, "density": 0.4, "no_solution_rate": 0.15},
    }
    test_knobs = [{"nodes_min": 6, "nodes_max": 8}, {"density": 0.6, "no_solution_rate": 0.5}]

    def build(self, rng, nodes_min, nodes_max, density, no_solution_rate):
        n = rng.randint(nodes_min, nodes_max)
        solvable = rng.random() >= no_solution_rate
        if solvable:
            order = rng.sample(range(n), n)
            edges = {_norm(a, b) for a, b in zip(order, order[1:])}
            if self.cycle:
                edges.add(_norm(order[-1], order[0]))
            _fill_to_density(rng, n, edges, _all_pairs(range(n)), density)
            answer, construction = " ".join(map(str, order)), "planted"
        else:
            edges, construction = _impossible_hamiltonian(rng, n, density, self.cycle)
            answer = NO_SOLUTION
        edge_list = sorted(edges)
        what = "cycle" if self.cycle else "path"
        rule = (
            "a cycle that visits every node exactly once and returns to its starting node"
            if self.cycle
            else "a path that visits every node exactly once (it may start and end at any nodes)"
        )
        closing = (
            " Do not repeat the first node at the end; the edge from the last node back to the first must exist."
            if self.cycle
            else ""
        )
        question = (
            f"An undirected graph has {n} nodes labelled 0 to {n - 1} and these edges:\n"
            + ", ".join(f"{u}-{v}" for u, v in edge_list)
            + f"\n\nFind a Hamiltonian {what}: {rule}. Consecutive nodes must be joined by an edge.\n"
            f"Answer with the nodes in visiting order separated by spaces, for example 0 4 2 ... .{closing} "
            f"Any valid Hamiltonian {what} is accepted. If the graph has no Hamiltonian {what}, "
            f"answer exactly: {NO_SOLUTION}"
        )
        metadata = {"n": n, "edges": [list(e) for e in edge_list], "solvable": solvable, "construction": construction}
        return question, answer, metadata

    def verify(self, answer, metadata):
        n, solvable = metadata["n"], metadata["solvable"]
        if is_no_solution(answer):
            return not solvable
        sequence = parse_int_sequence(answer, n + 1)
        if sequence is None or not solvable:
            return False
        return check_hamiltonian(sequence, n, {tuple(e) for e in metadata["edges"]}, self.cycle)

    def corruptions(self, puzzle: Puzzle, rng):
        body = extract_answer(puzzle.answer)
        meta = puzzle.metadata
        n, edges = meta["n"], {tuple(e) for e in meta["edges"]}
        if not meta["solvable"]:
            return [" ".join(map(str, range(n))), " ".join(map(str, rng.sample(range(n), n))), "0 1"]
        order = [int(t) for t in body.split()]
        non_edges = [p for p in _all_pairs(range(n)) if p not in edges]
        out = [
            NO_SOLUTION,
            " ".join(map(str, order[:-1])),  # truncated: misses a node
            " ".join(map(str, [*order[:-1], order[0]])),  # repeats a node
            " ".join(map(str, [*order, n])),  # a node not in the graph
        ]
        if non_edges:  # a step along a missing edge
            u, v = rng.choice(non_edges)
            out.append(" ".join(map(str, [u, v, *[x for x in order if x not in (u, v)]])))
        return out


@register
class HamiltonianCycle(_Hamiltonian):
    name = "hamiltonian_cycle"
    cycle = True


@register
class HamiltonianPath(_Hamiltonian):
    name = "hamiltonian_path"
    cycle = False


# --------------------------------------------------------------------------------------------
# Natural-language navigation
# --------------------------------------------------------------------------------------------

LANDMARKS = (
    "bakery", "library", "post office", "museum", "fire station", "school", "park", "bank",
    "pharmacy", "cinema", "train station", "hospital", "market", "church", "stadium", "zoo",
    "hotel", "florist", "bookshop", "town hall", "police station", "harbour", "gym", "cafe",
)
DIRECTIONS = {"N": (0, 1), "E": (1, 0), "S": (0, -1), "W": (-1, 0)}
DIRECTION_WORDS = {"N": "north", "E": "east", "S": "south", "W": "west"}
OPPOSITE = {"N": "S", "S": "N", "E": "W", "W": "E"}
MOVE_WORDS = frozenset(DIRECTIONS)


def _blocks(d: int) -> str:
    return f"{d} block" if d == 1 else f"{d} blocks"


def _describe(rng: random.Random, a: str, b: str, legs: list[tuple[str, int]]) -> str:
    """One sentence placing ``b`` relative to ``a`` by ``legs`` (random wording, maybe reversed)."""
    back = [(OPPOSITE[d], k) for d, k in reversed(legs)]
    words = lambda ls: " and then ".join(f"{_blocks(k)} {DIRECTION_WORDS[d]}" for d, k in ls)  # noqa: E731
    style = rng.randrange(3)
    if style == 0:
        return f"From the {a}, walk {words(legs)} to reach the {b}."
    if style == 1:
        return f"Starting at the {b}, you get to the {a} by walking {words(back)}."
    if len(legs) == 1:
        d, k = legs[0]
        return f"The {b} is {_blocks(k)} {DIRECTION_WORDS[d]} of the {a}."
    return f"To go from the {b} to the {a}, head {words(back)}."


@register
class NaturalLanguageNavigation(Task):
    """Landmarks on a street grid placed by relative statements (a random tree of offsets, some
    sentences stated in reverse); the question asks for a shortest walking route between two
    landmarks. Answer: single-block moves N/E/S/W; any shortest route is accepted (the verifier
    checks it ends at the target and has Manhattan length)."""

    name = "natural_language_navigation"
    category = "Graph"
    presets = {
        "easy": {"landmarks": 4, "max_legs": 1, "max_blocks": 4, "shuffle": 0},
        "medium": {"landmarks": 6, "max_legs": 2, "max_blocks": 5, "shuffle": 1},
        "hard": {"landmarks": 9, "max_legs": 2, "max_blocks": 6, "shuffle": 1},
    }
    test_knobs = [{"landmarks": 2}, {"landmarks": 12, "max_blocks": 2}]

    def build(self, rng, landmarks, max_legs, max_blocks, shuffle):
        names = rng.sample(LANDMARKS, landmarks)
        pos = {names[0]: (0, 0)}
        parent: dict[str, str] = {}
        sentences = []
        for b in names[1:]:
            while True:
                a = rng.choice(list(pos))
                first = rng.choice("NESW")
                legs = [(first, rng.randint(1, max_blocks))]
                if max_legs > 1 and rng.random() < 0.5:
                    legs.append((rng.choice("EW" if first in "NS" else "NS"), rng.randint(1, max_blocks)))
                x, y = pos[a]
                for d, k in legs:
                    x, y = x + DIRECTIONS[d][0] * k, y + DIRECTIONS[d][1] * k
                if (x, y) not in pos.values():
                    break
            pos[b], parent[b] = (x, y), a
            sentences.append(_describe(rng, a, b, legs))
        if shuffle:
            rng.shuffle(sentences)

        def depth(v):
            return 0 if v not in parent else 1 + depth(parent[v])

        pairs = [(s, t) for s in names for t in names if s != t]
        far = [p for p in pairs if depth(p[0]) + depth(p[1]) >= 2] or pairs
        src, dst = rng.choice(far)
        dx, dy = pos[dst][0] - pos[src][0], pos[dst][1] - pos[src][1]
        moves = ["E" if dx > 0 else "W"] * abs(dx) + ["N" if dy > 0 else "S"] * abs(dy)
        question = (
            "A town's streets form a square grid; every walk below follows the streets, one block at a time. "
            "North is up and east is right.\n"
            + "\n".join(sentences)
            + f"\n\nGive a shortest walking route from the {src} to the {dst}, written as single-block moves "
            "N, E, S or W separated by spaces (for example: N N E). Any route of the shortest possible "
            "length that ends at the destination is accepted."
        )
        metadata = {"dx": dx, "dy": dy, "source": src, "target": dst}
        return question, " ".join(moves), metadata

    def verify(self, answer, metadata):
        dx, dy = metadata["dx"], metadata["dy"]
        moves = parse_word_sequence(answer, MOVE_WORDS, abs(dx) + abs(dy) + 4)
        if moves is None or len(moves) != abs(dx) + abs(dy):
            return False
        x = sum(DIRECTIONS[m][0] for m in moves)
        y = sum(DIRECTIONS[m][1] for m in moves)
        return (x, y) == (dx, dy)

    def corruptions(self, puzzle, rng):
        moves = extract_answer(puzzle.answer).split()
        i = rng.randrange(len(moves))
        flipped = [*moves[:i], OPPOSITE[moves[i]], *moves[i + 1 :]]
        return [
            " ".join(moves[:-1]),  # stops one block short
            " ".join(flipped),  # one wrong direction
            " ".join(["N", *moves, "S"]),  # reaches the target but is not shortest
            " ".join([*moves, moves[-1]]),  # overshoots
            "walk there",
        ]


# --------------------------------------------------------------------------------------------
# Maze
# --------------------------------------------------------------------------------------------

STEPS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def maze_shortest_path(walls: list[str]) -> list[tuple[int, int]] | None:
    """BFS from the top-left to the bottom-right open cell; 0-based cells, or None if cut off."""
    n = len(walls)
    start, goal = (0, 0), (n - 1, n - 1)
    if walls[0][0] == "#" or walls[n - 1][n - 1] == "#":
        return None
    prev = {start: None}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        if cell == goal:
            path = []
            while cell is not None:
                path.append(cell)
                cell = prev[cell]
            return path[::-1]
        r, c = cell
        for dr, dc in STEPS:
            nxt = (r + dr, c + dc)
            if 0 <= nxt[0] < n and 0 <= nxt[1] < n and walls[nxt[0]][nxt[1]] == "." and nxt not in prev:
                prev[nxt] = cell
                queue.append(nxt)
    return None


def _wandering_path(rng: random.Random, n: int) -> list[tuple[int, int]]:
    """A simple path from (0,0) to (n-1,n-1): a goal-biased random walk with its loops erased."""
    walk = [(0, 0)]
    index = {(0, 0): 0}
    while walk[-1] != (n - 1, n - 1):
        r, c = walk[-1]
        dr, dc = rng.choices(STEPS, weights=(3, 1, 3, 1))[0]
        nxt = (min(max(r + dr, 0), n - 1), min(max(c + dc, 0), n - 1))
        if nxt == walk[-1]:
            continue
        if nxt in index:  # erase the loop just closed
            for cell in walk[index[nxt] + 1 :]:
                del index[cell]
            del walk[index[nxt] + 1 :]
        else:
            index[nxt] = len(walk)
            walk.append(nxt)
    return walk


def check_maze_path(path: list[tuple[int, int]], walls: list[str]) -> bool:
    """A legal path (1-based cells): starts at (1,1), ends at (n,n), every cell in bounds and open,
    every step to an orthogonal neighbour. Revisiting cells is allowed."""
    n = len(walls)
    if not path or path[0] != (1, 1) or path[-1] != (n, n):
        return False
    for r, c in path:
        if not (1 <= r <= n and 1 <= c <= n) or walls[r - 1][c - 1] != ".":
            return False
    return all(abs(r1 - r2) + abs(c1 - c2) == 1 for (r1, c1), (r2, c2) in zip(path, path[1:]))


@register
class Maze(Task):
    """Square maze, walls '#'; find any legal path from (1,1) to (n,n). A solvable maze is built
    around a random loop-erased walk so the wall ratio can be high; an unsolvable one is random
    walls confirmed cut off by BFS (falling back to walling in the goal)."""

    name = "maze"
    category = "Graph"
    presets = {
        "easy": {"size": 5, "wall_min": 0.15, "wall_max": 0.25, "no_solution_rate": 0.15},
        "medium": {"size": 7, "wall_min": 0.26, "wall_max": 0.40, "no_solution_rate": 0.15},
        "hard": {"size": 10, "wall_min": 0.41, "wall_max": 0.55, "no_solution_rate": 0.15},
    }
    test_knobs = [{"size": 3}, {"size": 12, "no_solution_rate": 0.5}]

    def build(self, rng, size, wall_min, wall_max, no_solution_rate):
        n = size
        cells = [(r, c) for r in range(n) for c in range(n)]
        want = int(rng.uniform(wall_min, wall_max) * n * n)
        solvable = rng.random() >= no_solution_rate
        if solvable:
            keep = set(_wandering_path(rng, n))
            candidates = [cell for cell in cells if cell not in keep]
            blocked = set(rng.sample(candidates, min(want, len(candidates))))
        else:
            inner = cells[1:-1]
            for _ in range(30):
                blocked = set(rng.sample(inner, min(want, len(inner))))
                grid = ["".join("#" if (r, c) in blocked else "." for c in range(n)) for r in range(n)]
                if maze_shortest_path(grid) is None:
                    break
            else:
                blocked |= {(n - 2, n - 1), (n - 1, n - 2)}
        walls = ["".join("#" if (r, c) in blocked else "." for c in range(n)) for r in range(n)]
        path = maze_shortest_path(walls)
        solvable = path is not None
        answer = format_coordinates(path) if solvable else NO_SOLUTION
        question = (
            f"A {n}x{n} maze is shown below, '.' is an open cell and '#' a wall. Rows are numbered 1 to {n} "
            f"from the top, columns 1 to {n} from the left.\n"
            + "\n".join(" ".join(row) for row in walls)
            + f"\n\nFind a path from the top-left cell (1,1) to the bottom-right cell ({n},{n}). Each step moves "
            "to an orthogonally adjacent open cell (up, down, left or right); walls and cells outside the grid "
            "cannot be entered. Answer with the visited cells as (row,column) pairs in order separated by "
            "spaces, starting with (1,1) and ending with "
            f"({n},{n}), for example (1,1) (1,2) (2,2) ... . Any legal path is accepted, it need not be the "
            f"shortest. If no path exists, answer exactly: {NO_SOLUTION}"
        )
        return question, answer, {"walls": walls, "solvable": solvable}

    def verify(self, answer, metadata):
        walls = metadata["walls"]
        if is_no_solution(answer):
            return not metadata["solvable"]
        path = parse_coordinates(answer, 4 * len(walls) ** 2)
        return path is not None and metadata["solvable"] and check_maze_path(path, walls)

    def corruptions(self, puzzle, rng):
        meta = puzzle.metadata
        walls, n = meta["walls"], len(meta["walls"])
        if not meta["solvable"]:
            straight = [(1, c) for c in range(1, n + 1)] + [(r, n) for r in range(2, n + 1)]
            return [" ".join(f"({r},{c})" for r, c in straight), "(1,1)", f"(1,1) ({n},{n})"]
        path = parse_coordinates(extract_answer(puzzle.answer), 4 * n * n)
        fmt = lambda p: " ".join(f"({r},{c})" for r, c in p)  # noqa: E731
        out = [NO_SOLUTION, fmt(path[:-1]), fmt([*path, (n + 1, n)])]
        if len(path) > 2:
            out.append(fmt(path[:1] + path[2:]))  # skips a cell: non-adjacent step
        detours = [
            (i, (r + dr, c + dc))
            for i, (r, c) in enumerate(path)
            for dr, dc in STEPS
            if 1 <= r + dr <= n and 1 <= c + dc <= n and walls[r + dr - 1][c + dc - 1] == "#"
        ]
        if detours:  # steps into a wall and back: every step adjacent, one cell is a wall
            i, wall = rng.choice(detours)
            out.append(fmt([*path[: i + 1], wall, *path[i:]]))
        return out
