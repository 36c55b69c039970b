"""Star battle: place k stars in every row, column and region; stars never touch.

Generation runs backwards from a solution: a random star placement (row-by-row search over
column choices, k stars per row and column, no two touching even diagonally), then one cluster
grown at random around every star until every cell is taken; for k = 2 adjacent clusters are
paired into regions by a random perfect matching (retried when none exists). The verifier
checks every rule, so any valid placement scores 1.
"""

from __future__ import annotations

import itertools
import random
import string

from datamodules.enigmata.base import Task, register
from datamodules.enigmata.grid_common import GRID_FORMAT, format_grid, gold_body, grid_corruptions, neighbours4, neighbours8, parse_grid

STAR, EMPTY = "*", "."
REGION_NAMES = string.ascii_uppercase


def random_star_rows(rng: random.Random, n: int, k: int) -> list[tuple[int, ...]] | None:
    """Star columns for each row: k per row and column, none touching (diagonals included)."""
    choices = [combo for combo in itertools.combinations(range(n), k) if all(b - a > 1 for a, b in zip(combo, combo[1:]))]
    col_count = [0] * n
    rows: list[tuple[int, ...]] = []
    budget = [50_000]

    def extend() -> bool:
        if len(rows) == n:
            return all(count == k for count in col_count)
        budget[0] -= 1
        if budget[0] < 0:
            return False
        left = n - len(rows)
        order = choices[:]
        rng.shuffle(order)
        for combo in order:
            if any(col_count[c] >= k for c in combo):
                continue
            if rows and any(abs(c - p) <= 1 for c in combo for p in rows[-1]):
                continue
            for c in combo:
                col_count[c] += 1
            rows.append(combo)
            # a column gains at most one star per two rows (vertical neighbours touch)
            if all(k - count <= left // 2 for count in col_count) and extend():
                return True
            rows.pop()
            for c in combo:
                col_count[c] -= 1
        return False

    return rows if extend() else None


def grow_clusters(rng: random.Random, n: int, seeds: list[tuple[int, int]]) -> list[list[int]]:
    """Partition the grid into connected clusters, one per seed, by random frontier growth."""
    owner = [[-1] * n for _ in range(n)]
    frontier: list[tuple[int, int, int]] = []
    for index, (r, c) in enumerate(seeds):
        owner[r][c] = index
    for index, (r, c) in enumerate(seeds):
        frontier.extend((a, b, index) for a, b in neighbours4(r, c, n, n) if owner[a][b] < 0)
    while frontier:
        pick = rng.randrange(len(frontier))
        frontier[pick], frontier[-1] = frontier[-1], frontier[pick]
        r, c, index = frontier.pop()
        if owner[r][c] >= 0:
            continue
        owner[r][c] = index
        frontier.extend((a, b, index) for a, b in neighbours4(r, c, n, n) if owner[a][b] < 0)
    return owner


def random_pairing(rng: random.Random, adjacency: list[set[int]]) -> list[int] | None:
    """A random perfect matching of the cluster adjacency graph (partner of each node), or None.
    Backtracking on the unmatched node with the fewest free neighbours; tiny graphs only."""
    partner = [-1] * len(adjacency)
    budget = [10_000]

    def extend() -> bool:
        free = [v for v in range(len(partner)) if partner[v] < 0]
        if not free:
            return True
        budget[0] -= 1
        if budget[0] < 0:
            return False
        v = min(free, key=lambda u: sum(partner[w] < 0 for w in adjacency[u]))
        options = sorted(w for w in adjacency[v] if partner[w] < 0)
        rng.shuffle(options)
        for w in options:
            partner[v], partner[w] = w, v
            if extend():
                return True
            partner[v] = partner[w] = -1
        return False

    return partner if extend() else None


def grow_regions(rng: random.Random, n: int, k: int, stars: set[tuple[int, int]]) -> list[list[int]] | None:
    """Partition the grid into n connected regions holding exactly k stars each (k = 1 or 2), or
    None: one cluster is grown around every star, and for k = 2 adjacent clusters are paired."""
    seeds = sorted(stars)
    rng.shuffle(seeds)
    cluster = grow_clusters(rng, n, seeds)
    if k == 1:
        return cluster
    adjacency = [set() for _ in seeds]
    for r in range(n):
        for c in range(n):
            for a, b in neighbours4(r, c, n, n):
                if cluster[a][b] != cluster[r][c]:
                    adjacency[cluster[r][c]].add(cluster[a][b])
    partner = random_pairing(rng, adjacency)
    if partner is None:
        return None
    region_of: dict[int, int] = {}
    for v in range(len(seeds)):
        if v not in region_of:
            region_of[v] = region_of[partner[v]] = len(region_of) // 2
    return [[region_of[cluster[r][c]] for c in range(n)] for r in range(n)]


def star_violations(grid: list[list[str]], region: list[list[int]], k: int) -> bool:
    """True when the star grid breaks any rule."""
    n = len(grid)
    stars = [(r, c) for r in range(n) for c in range(n) if grid[r][c] == STAR]
    if any(sum(cell == STAR for cell in row) != k for row in grid):
        return True
    if any(sum(grid[r][c] == STAR for r in range(n)) != k for c in range(n)):
        return True
    per_region = [0] * n
    for r, c in stars:
        per_region[region[r][c]] += 1
    if any(count != k for count in per_region):
        return True
    return any(grid[a][b] == STAR for r, c in stars for a, b in neighbours8(r, c, n, n))


@register
class StarBattle(Task):
    name = "star_battle"
    category = "Grid"
    presets = {
        "easy": {"size": 5, "stars": 1},
        "medium": {"size": 7, "stars": 1},
        "hard": {"size": 10, "stars": 2},
    }
    test_knobs = [{"size": 8, "stars": 1}, {"size": 9, "stars": 2}]

    def build(self, rng: random.Random, size: int, stars: int):
        if not 4 <= size <= len(REGION_NAMES) or stars not in (1, 2):
            raise ValueError(f"star_battle: size must be 4..26 and stars 1 or 2, got size={size} stars={stars}")
        for _attempt in range(200):
            rows = random_star_rows(rng, size, stars)
            if rows is None:
                continue
            star_cells = {(r, c) for r, combo in enumerate(rows) for c in combo}
            region = grow_regions(rng, size, stars, star_cells)
            if region is not None:
                break
        else:
            raise RuntimeError(f"star_battle: could not build a {size}x{size} puzzle with {stars} stars; try a larger size")
        solution = [[STAR if (r, c) in star_cells else EMPTY for c in range(size)] for r in range(size)]
        shown = format_grid([[REGION_NAMES[v] for v in row] for row in region])
        plural = "star" if stars == 1 else "stars"
        question = (
            f"Star battle on a {size}x{size} grid divided into {size} regions (cells with the same letter form one "
            f"region):\n\n{shown}\n\n"
            f"Place stars so that every row, every column and every region contains exactly {stars} {plural}, and no "
            "two stars touch each other, not even diagonally.\n\n"
            f"Answer with the grid using {STAR} for a star and {EMPTY} for an empty cell: {GRID_FORMAT} "
            f"({size} rows of {size} cells)."
        )
        return question, format_grid(solution), {"region": region, "stars": stars}

    def verify(self, answer: str, metadata: dict) -> bool:
        region = metadata["region"]
        n = len(region)
        grid = parse_grid(answer, n, n, (STAR, EMPTY), max_token_len=1)
        if grid is None:
            return False
        return not star_violations(grid, region, metadata["stars"])

    def corruptions(self, puzzle, rng):
        body = gold_body(puzzle)
        rows = [line.split() for line in body.splitlines()]
        # Shift the first row's first star one cell sideways: touches or breaks a column count.
        shifted = [row[:] for row in rows]
        c = shifted[0].index(STAR)
        target = c + 1 if c + 1 < len(shifted[0]) and shifted[0][c + 1] == EMPTY else c - 1
        shifted[0][c], shifted[0][target] = EMPTY, STAR
        return grid_corruptions(body, rng, [STAR, EMPTY]) + [format_grid(shifted)]
