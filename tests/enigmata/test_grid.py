"""Grid Enigmata tasks: gold answers pass, corruptions fail, and every rule is checked against
hand-built boards with several solutions and brute-force references written independently of
the verifiers."""

from __future__ import annotations

import itertools
import random


from datamodules.enigmata import TASKS
from datamodules.enigmata.base import DIFFICULTIES
from datamodules.enigmata.grid_binario import is_valid_binario, legal_rows
from datamodules.enigmata.grid_common import format_grid, parse_grid
from datamodules.enigmata.grid_crosswords import runs, word_list
from datamodules.enigmata.grid_magic_square import SEEDS, diagonal_preserving_permutations, is_magic, transform
from datamodules.enigmata.grid_skyscraper import clues_of, visible
from datamodules.enigmata.grid_sudoku import is_valid_sudoku, solved_grid
from datamodules.enigmata.grid_symbolic import deduce, obeys



def verify(task: str, body: str, metadata: dict) -> bool:
    return TASKS[task].verify(body, metadata)


def test_parse_grid_is_strict():
    assert parse_grid("1 2\n3 4", 2, 2, "1234") == [["1", "2"], ["3", "4"]]
    assert parse_grid("\n 1 2 \n\n3 4\n", 2, 2, "1234") == [["1", "2"], ["3", "4"]]
    assert parse_grid("1 2\n3 4\n1 2", 2, 2, "1234") is None
    assert parse_grid("1 2 3\n3 4", 2, 2, "1234") is None
    assert parse_grid("1 2\n3 5", 2, 2, "1234") is None
    assert parse_grid("12\n34", 2, 2, "1234") is None


# ----- sudoku / sudoku2 ----------------------------------------------------------------------

def unique_rectangle(grid):
    """Cells (r1,c1),(r1,c2),(r2,c1),(r2,c2) in one band and two stacks holding a b / b a."""
    for r1, r2 in itertools.combinations(range(9), 2):
        if r1 // 3 != r2 // 3:
            continue
        for c1, c2 in itertools.combinations(range(9), 2):
            if c1 // 3 != c2 // 3 and grid[r1][c1] == grid[r2][c2] and grid[r1][c2] == grid[r2][c1]:
                return r1, r2, c1, c2
    return None


def test_sudoku_accepts_every_valid_completion():
    for seed in range(40):
        solution = solved_grid(random.Random(seed), 3)
        rect = unique_rectangle(solution)
        if rect:
            break
    assert rect is not None
    r1, r2, c1, c2 = rect
    puzzle = [row[:] for row in solution]
    for r, c in itertools.product((r1, r2), (c1, c2)):
        puzzle[r][c] = 0
    other = [row[:] for row in solution]
    other[r1][c1], other[r1][c2] = solution[r1][c2], solution[r1][c1]
    other[r2][c1], other[r2][c2] = solution[r2][c2], solution[r2][c1]
    assert other != solution and is_valid_sudoku(other, 3)
    meta = {"puzzle": puzzle, "box": 3}
    assert verify("sudoku", format_grid(solution), meta)
    assert verify("sudoku", format_grid(other), meta)
    # ... but not when one of those cells is a given
    puzzle[r1][c1] = solution[r1][c1]
    assert not verify("sudoku", format_grid(other), meta)


def test_sudoku_checks_boxes_not_just_latin():
    shifted = [[(r + c) % 9 + 1 for c in range(9)] for r in range(9)]  # latin square, boxes wrong
    assert not verify("sudoku", format_grid(shifted), {"puzzle": [[0] * 9 for _ in range(9)], "box": 3})
    latin4 = [[1, 2, 3, 4], [2, 3, 4, 1], [3, 4, 1, 2], [4, 1, 2, 3]]
    blank4 = {"puzzle": [[0] * 4 for _ in range(4)], "box": 2}
    assert not verify("sudoku2", format_grid(latin4), blank4)
    a = [[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]]
    b = [[2, 1, 4, 3], [4, 3, 2, 1], [1, 2, 3, 4], [3, 4, 1, 2]]
    assert verify("sudoku2", format_grid(a), blank4) and verify("sudoku2", format_grid(b), blank4)
    # brute force: 288 4x4 sudokus exist, so 288 / 4! = 12 have the first row 1 2 3 4
    perms = list(itertools.permutations(range(1, 5)))
    count = sum(is_valid_sudoku([[1, 2, 3, 4]] + [list(p) for p in rows], 2) for rows in itertools.product(perms, repeat=3))
    assert count == 12


def test_sudoku_blank_counts_follow_presets():
    for difficulty, (low, high) in {"easy": (10, 20), "medium": (20, 35), "hard": (35, 50)}.items():
        for seed in range(20):
            blanks = sum(v == 0 for row in TASKS["sudoku"].generate(seed, difficulty).metadata["puzzle"] for v in row)
            assert low <= blanks <= high


# ----- binario ------------------------------------------------------------------------------

def test_binario_rules():
    assert len(legal_rows(4)) == 6 and len(legal_rows(6)) == 14  # hand count: 6 balanced rows of 4, 14 of 6
    repeated = [[0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0]]
    assert is_valid_binario(repeated, unique_lines=False) and not is_valid_binario(repeated, unique_lines=True)
    blank = [[-1] * 4 for _ in range(4)]
    assert verify("binario", format_grid(repeated), {"puzzle": blank, "unique_lines": 0})
    assert not verify("binario", format_grid(repeated), {"puzzle": blank, "unique_lines": 1})
    a = [[0, 0, 1, 1], [1, 1, 0, 0], [0, 1, 0, 1], [1, 0, 1, 0]]
    b = [[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0], [0, 1, 0, 1]]
    assert verify("binario", format_grid(a), {"puzzle": blank, "unique_lines": 1})
    assert verify("binario", format_grid(b), {"puzzle": blank, "unique_lines": 1})
    triple = [[0, 0, 0, 1, 1, 1], [1, 1, 1, 0, 0, 0]] * 3  # balanced, but three in a row
    assert not verify("binario", format_grid(triple), {"puzzle": [[-1] * 6 for _ in range(6)], "unique_lines": 0})
    given = [row[:] for row in blank]
    given[0][0] = 1
    assert not verify("binario", format_grid(a), {"puzzle": given, "unique_lines": 1})


# ----- campsite -----------------------------------------------------------------------------

def brute_force_campsite(meta):
    """All tent placements obeying the rules, by enumeration and trying every tree->tent pairing."""
    n_rows, n_cols = meta["rows"], meta["cols"]
    trees = [tuple(t) for t in meta["trees"]]
    free = [(r, c) for r in range(n_rows) for c in range(n_cols) if (r, c) not in trees]
    found = []
    for tents in itertools.combinations(free, len(trees)):
        if [sum(t[0] == r for t in tents) for r in range(n_rows)] != meta["row_counts"]:
            continue
        if [sum(t[1] == c for t in tents) for c in range(n_cols)] != meta["col_counts"]:
            continue
        if any(max(abs(a[0] - b[0]), abs(a[1] - b[1])) <= 1 for a, b in itertools.combinations(tents, 2)):
            continue
        if any(all(abs(t[0] - p[0]) + abs(t[1] - p[1]) == 1 for t, p in zip(trees, perm)) for perm in itertools.permutations(tents)):
            found.append(set(tents))
    return found


def campsite_body(meta, tents):
    trees = {tuple(t) for t in meta["trees"]}
    return format_grid(
        [["T" if (r, c) in trees else "A" if (r, c) in tents else "." for c in range(meta["cols"])] for r in range(meta["rows"])]
    )


def test_campsite_diagonal_touch_is_rejected():
    meta = {"rows": 2, "cols": 3, "trees": [[0, 1], [1, 2]], "row_counts": [1, 1], "col_counts": [0, 1, 1]}
    # tents (1,1) and (0,2): counts and pairing fine, but they touch diagonally
    assert not verify("campsite", ". T A\n. A T", meta)
    assert brute_force_campsite(meta) == []


def test_campsite_verifier_matches_brute_force():
    several = 0
    for seed in range(30):
        puzzle = TASKS["campsite"].generate(seed, "medium", rows=4, cols=5, tent_density=0.15)
        meta = puzzle.metadata
        solutions = brute_force_campsite(meta)
        several += len(solutions) > 1
        trees = {tuple(t) for t in meta["trees"]}
        free = [(r, c) for r in range(4) for c in range(5) if (r, c) not in trees]
        accepted = [set(t) for t in itertools.combinations(free, len(trees)) if verify("campsite", campsite_body(meta, set(t)), meta)]
        assert sorted(map(sorted, accepted)) == sorted(map(sorted, solutions)), seed
    assert several >= 1  # some instance has two placements and both score 1


def test_campsite_matching_is_required():
    # Tents (0,0) and (0,2) do not touch and the counts hold, but tree (1,1) has no tent beside it.
    meta = {"rows": 2, "cols": 3, "trees": [[1, 0], [1, 1]], "row_counts": [2, 0], "col_counts": [1, 0, 1]}
    assert not verify("campsite", "A . A\nT T .", meta)  # tree (1,1) has no orthogonal tent
    assert brute_force_campsite(meta) == []


# ----- magic square -------------------------------------------------------------------------

def test_magic_transforms_keep_squares_magic():
    for n, seeds in SEEDS.items():
        orbit = set()
        for seed in seeds:
            assert is_magic(seed)
            for perm in diagonal_preserving_permutations(n):
                for flags in itertools.product((False, True), repeat=3):
                    square = transform(seed, perm, *flags)
                    assert is_magic(square)
                    orbit.add(tuple(map(tuple, square)))
        assert len(orbit) == {3: 8, 4: 1312}[n]


def test_magic_square_accepts_all_eight_3x3_squares():
    all_magic = [p for p in itertools.permutations(range(1, 10)) if sum(p[:3]) == 15 and is_magic([list(p[0:3]), list(p[3:6]), list(p[6:9])])]
    assert len(all_magic) == 8
    blank = {"puzzle": [[0] * 3 for _ in range(3)]}
    for p in all_magic:
        assert verify("magic_square", format_grid([p[0:3], p[3:6], p[6:9]]), blank)
    assert not verify("magic_square", "1 2 3\n4 5 6\n7 8 9", blank)
    assert not verify("magic_square", "5 5 5\n5 5 5\n5 5 5", blank)  # sums right, numbers repeat
    given = {"puzzle": [[2, 0, 0], [0, 0, 0], [0, 0, 0]]}
    accepted = [p for p in all_magic if verify("magic_square", format_grid([p[0:3], p[3:6], p[6:9]]), given)]
    assert len(accepted) == 2 and all(p[0] == 2 for p in accepted)


def test_magic_square_4x4_other_completion():
    durer = [[16, 3, 2, 13], [5, 10, 11, 8], [9, 6, 7, 12], [4, 15, 14, 1]]
    mirrored = [row[::-1] for row in durer]
    meta = {"puzzle": [[0, 0, 0, 0], [0, 10, 11, 0], [0, 0, 0, 0], [0, 0, 0, 0]]}
    assert verify("magic_square", format_grid(durer), meta)
    assert not verify("magic_square", format_grid(mirrored), meta)  # mirror moves the givens
    meta_free = {"puzzle": [[0, 0, 0, 0], [0, 0, 0, 0], [0, 6, 7, 0], [0, 0, 0, 0]]}
    outer_swapped = transform(durer, (3, 1, 2, 0), False, False, False)  # inner cells stay put
    assert outer_swapped != durer and is_magic(outer_swapped)
    assert verify("magic_square", format_grid(durer), meta_free)
    assert verify("magic_square", format_grid(outer_swapped), meta_free)


# ----- skyscraper / sum_skyscraper ------------------------------------------------------------

def test_visibility_by_hand():
    assert visible([2, 1, 3]) == [2, 3]
    assert visible([1, 2, 3, 4]) == [1, 2, 3, 4] and visible([4, 3, 2, 1]) == [4]
    grid = [[1, 2, 3], [2, 3, 1], [3, 1, 2]]
    assert clues_of(grid, use_sum=False) == {"top": [3, 2, 1], "bottom": [1, 2, 2], "left": [3, 2, 1], "right": [1, 2, 2]}
    assert clues_of(grid, use_sum=True)["bottom"] == [3, 4, 5]


def test_skyscraper_accepts_any_grid_matching_the_clues():
    # One clue: 1 building seen from the top of column 3, i.e. it starts with the 3. Of the 12
    # latin squares of order 3, each symbol sits in that corner in 4, and all 4 score 1.
    meta = {"size": 3, "use_sum": 0, "clues": {"top": [None, None, 1], "bottom": [None] * 3, "left": [None] * 3, "right": [None] * 3}}
    squares = [[list(a), list(b), list(c)] for a, b, c in itertools.permutations(itertools.permutations(range(1, 4)), 3)]
    latin = [g for g in squares if all(sorted(g[r][c] for r in range(3)) == [1, 2, 3] for c in range(3))]
    assert len(latin) == 12
    expected = [g for g in latin if g[0][2] == 3]
    accepted = [g for g in squares if verify("skyscraper", format_grid(g), meta)]
    assert len(expected) == 4 and accepted == expected
    not_latin = [[1, 2, 3], [2, 3, 1], [3, 3, 2]]
    assert not verify("skyscraper", format_grid(not_latin), {**meta, "clues": {s: [None] * 3 for s in meta["clues"]}})


def test_sum_skyscraper_uses_sums():
    grid = [[1, 2, 3], [2, 3, 1], [3, 1, 2]]
    clues = clues_of(grid, use_sum=True)
    assert verify("sum_skyscraper", format_grid(grid), {"size": 3, "use_sum": 1, "clues": clues})
    counts = clues_of(grid, use_sum=False)
    assert not verify("sum_skyscraper", format_grid(grid), {"size": 3, "use_sum": 1, "clues": counts})


# ----- star battle --------------------------------------------------------------------------

def test_star_battle_rules():
    rows_as_regions = {"region": [[r] * 4 for r in range(4)], "stars": 1}
    a = [[0, 1, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0], [0, 0, 1, 0]]
    b = [[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0]]
    to_body = lambda g: format_grid([["*" if v else "." for v in row] for row in g])  # noqa: E731
    assert verify("star_battle", to_body(a), rows_as_regions) and verify("star_battle", to_body(b), rows_as_regions)
    identity = [[int(r == c) for c in range(4)] for r in range(4)]  # one per row/column/region, touching diagonally
    assert not verify("star_battle", to_body(identity), rows_as_regions)
    stripes = {"region": [[(r + c) % 4 for c in range(4)] for r in range(4)], "stars": 1}
    assert not verify("star_battle", to_body(a), stripes)  # stripe 1 holds two stars
    # brute force: with row regions, exactly the 2 permutations without neighbours are accepted
    accepted = [p for p in itertools.permutations(range(4)) if verify("star_battle", to_body([[int(c == p[r]) for c in range(4)] for r in range(4)]), rows_as_regions)]
    assert sorted(accepted) == [(1, 3, 0, 2), (2, 0, 3, 1)]


def test_star_battle_regions_are_connected_and_hold_k_stars():
    for difficulty in DIFFICULTIES:
        for seed in range(10):
            puzzle = TASKS["star_battle"].generate(seed, difficulty)
            region, k = puzzle.metadata["region"], puzzle.metadata["stars"]
            n = len(region)
            stars = [[cell == "*" for cell in line.split()] for line in puzzle.answer[8:-9].splitlines()]
            for label in range(n):
                cells = {(r, c) for r in range(n) for c in range(n) if region[r][c] == label}
                assert sum(stars[r][c] for r, c in cells) == k
                seen, todo = set(), [next(iter(sorted(cells)))]
                while todo:
                    r, c = todo.pop()
                    if (r, c) in seen:
                        continue
                    seen.add((r, c))
                    todo += [(r + dr, c + dc) for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0)) if (r + dr, c + dc) in cells]
                assert seen == cells


# ----- crosswords ---------------------------------------------------------------------------

def test_word_list_is_clean():
    words = word_list()
    assert 1000 <= len(words) <= 2500 and len(set(words)) == len(words)
    assert all(3 <= len(w) <= 7 and w.isalpha() and w.islower() for w in words)
    assert {"cat", "act", "toe"} <= set(words)


def test_crosswords_anagram_ambiguity_and_violations():
    meta = {"shape": ["...", "##.", "##."], "slots": [[0, 0, "across", "atc"], [0, 2, "down", "eot"]]}
    assert verify("full_crosswords", "c a t\n# # o\n# # e", meta)
    assert verify("full_crosswords", "a c t\n# # o\n# # e", meta)  # the other anagram also fits
    assert verify("full_crosswords", "C A T\n# # O\n# # E", meta)  # case is ignored
    assert not verify("full_crosswords", "t c a\n# # o\n# # e", meta)  # not a word
    assert not verify("full_crosswords", "c a t\n# # e\n# # o", meta)  # 'teo' is not a word
    assert not verify("full_crosswords", "c a t\n# o #\n# # e", meta)  # block moved
    assert not verify("full_crosswords", "c a r\n# # o\n# # e", meta)  # letters differ from the clue


def test_crossword_slots_are_exactly_the_runs():
    for difficulty in DIFFICULTIES:
        for seed in range(20):
            puzzle = TASKS["full_crosswords"].generate(seed, difficulty)
            rows = [line.split() for line in puzzle.answer[8:-9].splitlines()]
            cells = {(r, c): v for r, row in enumerate(rows) for c, v in enumerate(row) if v != "#"}
            words = [w for _, _, w in runs(cells, (0, 1)) + runs(cells, (1, 0))]
            slots = puzzle.metadata["slots"]
            assert sorted(sorted(w) for w in words) == sorted(sorted(s[3]) for s in slots)
            assert len(set(words)) == len(words) and set(words) <= set(word_list())
            assert len(slots) == TASKS["full_crosswords"].presets[difficulty]["words"]


# ----- symbolic_hard ------------------------------------------------------------------------

def test_symbolic_missing_values_are_unique_by_brute_force():
    checked = set()
    for difficulty in DIFFICULTIES:
        for seed in range(40):
            meta = TASKS["symbolic_hard"].generate(seed, difficulty).metadata
            family, holes = meta["family"], meta["holes"]
            symbolic = family in ("shift", "latin")
            if symbolic:
                domain = meta["symbols"]
            elif len(holes) == 1:
                domain = range(-400, 1200)
            else:
                continue
            fills = []
            for values in itertools.product(domain, repeat=len(holes)):
                grid = [row[:] for row in meta["puzzle"]]
                for (r, c), v in zip(holes, values):
                    grid[r][c] = v
                if obeys(family, grid):
                    fills.append(values)
            assert len(fills) == 1, (difficulty, seed, family, fills[:3])
            assert verify("symbolic_hard", " ".join(map(str, fills[0])), meta)
            checked.add(family)
    assert {"row_ap", "row_op", "shift", "latin"} <= checked


def test_symbolic_deduction_refuses_ambiguous_grids():
    # 2 (op) 2 = 4 for both + and x, so the hidden cell is 6 or 3 (or -6 with -): not forced.
    assert deduce("row_op", [[2, 2, 4], [3, None, 9]], []) is None
    assert deduce("row_op", [[5, 2, 7], [3, None, 9]], []) == [[5, 2, 7], [3, 6, 9]]
    assert deduce("row_ap", [[1, None, None], [2, 4, 6]], []) is None  # one point fixes no progression
    assert deduce("row_ap", [[1, None, 5], [2, 4, 6]], []) == [[1, 3, 5], [2, 4, 6]]
    assert deduce("grid_ap", [[1, None, None], [None, None, 6], [3, None, 9]], []) == [[1, 2, 3], [2, 4, 6], [3, 6, 9]]
    assert deduce("shift", [["A", "B", "C"], ["B", None, "A"], [None, "A", "B"]], ["A", "B", "C"]) == [
        ["A", "B", "C"],
        ["B", "C", "A"],
        ["C", "A", "B"],
    ]
    assert deduce("latin", [["A", None, None], [None, None, None], [None, None, "A"]], ["A", "B", "C"]) is None


def test_symbolic_answer_parsing():
    meta = {"family": "row_ap", "puzzle": [[1, None, 5], [2, 4, None]], "holes": [[0, 1], [1, 2]], "symbols": []}
    assert verify("symbolic_hard", "3 6", meta)
    assert verify("symbolic_hard", "3, 6", meta)
    assert not verify("symbolic_hard", "6 3", meta)
    assert not verify("symbolic_hard", "3", meta)
    assert not verify("symbolic_hard", "3 6 9", meta)
    assert not verify("symbolic_hard", "3.0 6", meta)
    assert not verify("symbolic_hard", "3 " + "6" * 50, meta)
