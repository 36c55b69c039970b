"""Graph and Search Enigmata tasks: gold answers pass, corruptions fail, every valid alternative
solution passes, and the rules are checked on hand-built instances and against independent
references (bitmask DP for Hamiltonicity, flood fill for mazes, re-reading the navigation story)."""

from __future__ import annotations

import re

import chess
import pytest

from datamodules.enigmata import TASKS
from datamodules.enigmata.base import DIFFICULTIES, NO_SOLUTION
from datamodules.enigmata.graph import hamiltonian_exists
from datamodules.enigmata.search_chess import mating_moves
from datamodules.enigmata.search_parsing import parse_coordinates, parse_int_sequence, parse_symbol_grid
from datamodules.enigmata.search_tic_tac_toe import optimal_moves
from lit_reason.tasks.answer import format_answer

GRAPH = ["hamiltonian_cycle", "hamiltonian_path", "natural_language_navigation", "maze"]
SEARCH = ["hitori", "kakurasu", "minesweeper", "light_up", "slant", "checkmate_in_one", "tic_tac_toe"]
ALL = GRAPH + SEARCH


def ok(task: str, metadata: dict, body: str) -> bool:
    """Score ``body`` the way training does (extraction + verify), as a bool."""
    from datamodules.enigmata.base import Puzzle

    puzzle = Puzzle(task, TASKS[task].category, "medium", "", "", metadata)
    return puzzle.score(format_answer(body)) == 1.0


@pytest.mark.parametrize("name", ["hamiltonian_cycle", "hamiltonian_path", "maze"])
def test_unsolvable_rate_is_between_5_and_30_percent(name):
    flags = [TASKS[name].generate(seed, "medium").metadata["solvable"] for seed in range(200)]
    assert 0.05 <= flags.count(False) / len(flags) <= 0.30


# ------------------------------------------------------------------ parsers


def test_parsers_are_strict_and_bounded():
    assert parse_coordinates("(1,2) (3, 4) -> (5,6)", 5) == [(1, 2), (3, 4), (5, 6)]
    assert parse_coordinates("(1,2)", 0) is None
    for bad in ["(1,2", "(-1,2)", "(1,2,3)", "1,2", "(a,b)", "((1,2))", "(12345,1)"]:
        assert parse_coordinates(bad, 5) is None, bad
    assert parse_coordinates("(1,1) " * 10_000, 100) is None
    assert parse_int_sequence("0 -> 3, 2", 5) == [0, 3, 2]
    assert parse_int_sequence("0 -3", 5) is None and parse_int_sequence("١ ٢", 5) is None
    assert parse_symbol_grid("# .\n. #", 2, 2, "#.") == ["#.", ".#"]
    assert parse_symbol_grid("# .\n. #\n# #", 2, 2, "#.") is None


# ------------------------------------------------------------------ Hamiltonian

PETERSEN = [(i, (i + 1) % 5) for i in range(5)] + [(i, i + 5) for i in range(5)] + [
    (5, 7), (7, 9), (9, 6), (6, 8), (8, 5)
]


def test_exact_dp_on_known_graphs():
    # The Petersen graph is the classic graph with a Hamiltonian path but no Hamiltonian cycle.
    assert not hamiltonian_exists(10, PETERSEN, cycle=True)
    assert hamiltonian_exists(10, PETERSEN, cycle=False)
    star = [(0, i) for i in range(1, 4)]
    assert not hamiltonian_exists(4, star, cycle=False)


@pytest.mark.parametrize("name", ["hamiltonian_cycle", "hamiltonian_path"])
def test_no_solution_flag_matches_exact_dp(name):
    cycle = name == "hamiltonian_cycle"
    seen = set()
    for seed in range(60):
        puzzle = TASKS[name].generate(seed, "easy", nodes_min=7, nodes_max=11, no_solution_rate=0.5)
        meta = puzzle.metadata
        assert hamiltonian_exists(meta["n"], [tuple(e) for e in meta["edges"]], cycle) == meta["solvable"], seed
        seen.add(meta["construction"])
    assert seen == {"planted", "bipartite", "cut_vertex", "pendant"}


def test_hamiltonian_accepts_every_valid_cycle_and_path():
    # a 6-cycle 0..5 with chords 0-3 and 1-4 has several Hamiltonian cycles
    edges = [[i, (i + 1) % 6] for i in range(6)] + [[0, 3], [1, 4]]
    edges = [sorted(e) for e in edges]
    meta = {"n": 6, "edges": edges, "solvable": True}
    for body in ["0 1 2 3 4 5", "5 4 3 2 1 0", "2 3 4 5 0 1", "0 3 2 1 4 5", "0 1 2 3 4 5 0", "0, 1, 2, 3, 4, 5"]:
        assert ok("hamiltonian_cycle", meta, body), body
    assert not ok("hamiltonian_cycle", meta, "0 1 4 3 2 5")  # 2-5 is not an edge
    assert not ok("hamiltonian_cycle", meta, "0 1 2 3 5 4")  # 3-5 missing
    assert not ok("hamiltonian_cycle", meta, "0 1 2 3 4")  # misses node 5
    assert not ok("hamiltonian_cycle", meta, NO_SOLUTION)
    assert ok("hamiltonian_path", meta, "1 0 5 4 3 2") and ok("hamiltonian_path", meta, "3 0 1 2") is False
    assert ok("hamiltonian_path", meta, "2 1 0 3 4 5")
    petersen = {"n": 10, "edges": [sorted(e) for e in PETERSEN], "solvable": False}
    assert ok("hamiltonian_cycle", petersen, NO_SOLUTION)
    assert not ok("hamiltonian_cycle", petersen, " ".join(map(str, range(10))))


# ------------------------------------------------------------------ navigation

_LEG = re.compile(r"(\d+) blocks? (north|east|south|west)")
_VEC = {"north": (0, 1), "east": (1, 0), "south": (0, -1), "west": (-1, 0)}


def _legs(text):
    return tuple(map(sum, zip(*[(int(k) * _VEC[d][0], int(k) * _VEC[d][1]) for k, d in _LEG.findall(text)])))


def _reread_story(prompt: str):
    """Independently rebuild landmark positions from the story sentences."""
    relations = []  # (from, to, (dx, dy))
    for line in prompt.splitlines():
        m = re.match(r"From the (.+?), walk (.+) to reach the (.+)\.$", line)
        if m:
            relations.append((m[1], m[3], _legs(m[2])))
        m = re.match(r"Starting at the (.+?), you get to the (.+?) by walking (.+)\.$", line)
        if m:
            relations.append((m[1], m[2], _legs(m[3])))
        m = re.match(r"The (.+?) is (\d+ blocks? \w+) of the (.+)\.$", line)
        if m:
            relations.append((m[3], m[1], _legs(m[2])))
        m = re.match(r"To go from the (.+?) to the (.+?), head (.+)\.$", line)
        if m:
            relations.append((m[1], m[2], _legs(m[3])))
    pos = {relations[0][0]: (0, 0)}
    while len(pos) < len({x for r in relations for x in r[:2]}):
        for a, b, (dx, dy) in relations:
            if a in pos and b not in pos:
                pos[b] = (pos[a][0] + dx, pos[a][1] + dy)
            elif b in pos and a not in pos:
                pos[a] = (pos[b][0] - dx, pos[b][1] - dy)
    src, dst = re.search(r"route from the (.+?) to the (.+?), written", prompt).groups()
    return len(relations), pos, src, dst


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_navigation_answer_matches_the_story(difficulty):
    task = TASKS["natural_language_navigation"]
    for seed in range(30):
        puzzle = task.generate(seed, difficulty)
        count, pos, src, dst = _reread_story(puzzle.prompt)
        assert count == task.presets[difficulty]["landmarks"] - 1
        assert len(set(pos.values())) == len(pos)  # landmarks on distinct corners
        assert (pos[dst][0] - pos[src][0], pos[dst][1] - pos[src][1]) == (puzzle.metadata["dx"], puzzle.metadata["dy"])


def test_navigation_accepts_every_shortest_route_only():
    meta = {"dx": 2, "dy": -1}
    for body in ["E E S", "S E E", "E S E", "e, s, e"]:
        assert ok("natural_language_navigation", meta, body), body
    for body in ["E E", "E E S S", "E E S N S", "W E E E S", "E E S X", "", "2E 1S"]:
        assert not ok("natural_language_navigation", meta, body), body


# ------------------------------------------------------------------ maze


def _flood_reachable(walls):
    n = len(walls)
    seen, stack = {(0, 0)}, [(0, 0)]
    while stack:
        r, c = stack.pop()
        for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if 0 <= nr < n and 0 <= nc < n and walls[nr][nc] == "." and (nr, nc) not in seen:
                seen.add((nr, nc))
                stack.append((nr, nc))
    return (n - 1, n - 1) in seen


def test_maze_solvable_flag_matches_flood_fill_and_wall_ratio():
    for difficulty, (lo, hi) in zip(DIFFICULTIES, [(0.15, 0.25), (0.26, 0.40), (0.41, 0.55)]):
        for seed in range(40):
            meta = TASKS["maze"].generate(seed, difficulty).metadata
            walls = meta["walls"]
            assert _flood_reachable(walls) == meta["solvable"]
            ratio = sum(row.count("#") for row in walls) / len(walls) ** 2
            assert lo - 0.03 <= ratio <= hi + 0.03, (difficulty, seed, ratio)


def test_maze_accepts_any_legal_path():
    meta = {"walls": [". . .".replace(" ", ""), ".#.", "..."], "solvable": True}
    for body in [
        "(1,1) (1,2) (1,3) (2,3) (3,3)",
        "(1,1) (2,1) (3,1) (3,2) (3,3)",
        "(1,1) (1,2) (1,1) (2,1) (3,1) (3,2) (3,3)",  # revisits allowed, not shortest
        "(1,1)->(2,1)->(3,1)->(3,2)->(3,3)",
    ]:
        assert ok("maze", meta, body), body
    for body in [
        "(1,1) (1,2) (2,2) (3,2) (3,3)",  # through the wall
        "(1,1) (2,2) (3,3)",  # diagonal steps
        "(1,1) (1,3) (3,3)",  # jumps
        "(1,2) (1,3) (2,3) (3,3)",  # wrong start
        "(1,1) (1,2) (1,3) (2,3)",  # stops short
        "(1,1) (1,2) (1,3) (1,4) (2,4) (3,4) (3,3)",  # leaves the grid
        NO_SOLUTION,
    ]:
        assert not ok("maze", meta, body), body
    blocked = {"walls": ["..#", ".#.", "#.."], "solvable": False}
    assert ok("maze", blocked, "No solution.") and not ok("maze", blocked, "(1,1) (2,2) (3,3)")


# ------------------------------------------------------------------ search puzzles


def test_hitori_rules():
    meta = {"grid": [[1, 1, 2], [2, 3, 1], [3, 2, 3]]}
    for body in ["# . .\n. . .\n# . .", ". # .\n. . .\n. . #", "# . .\n. . .\n. . #"]:
        assert ok("hitori", meta, body), body
    assert not ok("hitori", meta, "# . .\n# . .\n. . #")  # shaded cells touch
    assert not ok("hitori", meta, "# . .\n. . .\n. . .")  # 3 repeated in the last row
    latin = {"grid": [[1, 2, 3], [2, 3, 1], [3, 1, 2]]}
    assert ok("hitori", latin, ". . .\n. . .\n. . .")
    assert not ok("hitori", latin, ". # .\n# . .\n. . .")  # (1,1) cut off from the rest


def test_kakurasu_accepts_both_solutions_of_an_ambiguous_board():
    meta = {"row_clues": [3, 3, 3], "col_clues": [3, 3, 3]}
    assert ok("kakurasu", meta, ". . #\n. . #\n# # .")
    assert ok("kakurasu", meta, "# # .\n# # .\n. . #")
    assert not ok("kakurasu", meta, "# # .\n# # .\n. . .")  # row 3 and column 3 sum to 0
    assert not ok("kakurasu", meta, ". . #\n. . #\n. . #")  # column 3 sums to 6


def test_minesweeper_accepts_any_consistent_layout():
    meta = {"board": ["???", "?11", "000"], "mines": 1}
    assert ok("minesweeper", meta, "(1,2)") and ok("minesweeper", meta, "(1,3)")
    assert not ok("minesweeper", meta, "(1,1)")  # leaves (2,3)'s 1 unsatisfied
    assert not ok("minesweeper", meta, "(2,1)")  # (3,1) shows 0
    assert not ok("minesweeper", meta, "(1,2) (1,3)")  # wrong count, (2,3) would be 2
    assert not ok("minesweeper", meta, "(2,2)")  # a revealed cell


def test_light_up_rules():
    empty = {"grid": ["...", "...", "..."]}
    for body in ["(1,1) (2,2) (3,3)", "(1,3) (2,2) (3,1)", "(1,2) (2,3) (3,1)"]:
        assert ok("light_up", empty, body), body
    assert not ok("light_up", empty, "(1,1) (1,3) (2,2) (3,2)")  # (1,1) and (1,3) see each other
    assert not ok("light_up", empty, "(1,1) (2,2)")  # (3,3) stays dark
    zero = {"grid": ["0..", "...", "..."]}
    assert ok("light_up", zero, "(1,3) (2,2) (3,1)")
    assert not ok("light_up", zero, "(1,2) (2,3) (3,1)")  # a bulb next to the 0
    one = {"grid": ["1..", "...", "..."]}
    assert not ok("light_up", one, "(1,3) (2,2) (3,1)")  # the 1 has no bulb beside it
    assert not ok("light_up", one, "(1,1) (2,2) (3,3)")  # a bulb on the black cell


def test_slant_rules():
    free = {"clues": ["..", ".."]}
    assert ok("slant", free, "/") and ok("slant", free, "\\")
    assert ok("slant", {"clues": ["1.", ".."]}, "\\") and not ok("slant", {"clues": ["1.", ".."]}, "/")
    no_clues = {"clues": ["...", "...", "..."]}
    assert not ok("slant", no_clues, "/ \\\n\\ /")  # the four diagonals close a diamond loop
    assert ok("slant", no_clues, "/ /\n\\ /") and ok("slant", no_clues, "\\ \\\n\\ \\")


def test_checkmate_accepts_every_mating_move_in_san_or_uci():
    fen = "6k1/5ppp/8/8/8/8/8/R3R1K1 w - - 0 1"  # back rank: Ra8# and Re8# both mate
    meta = {"fen": fen}
    assert {chess.Board(fen).san(m) for m in mating_moves(chess.Board(fen))} == {"Ra8#", "Re8#"}
    for body in ["Ra8#", "Re8", "a1a8", "e1e8", "Re8+"]:
        assert ok("checkmate_in_one", meta, body), body
    for body in ["Rb1", "Re7", "Qh7#", "e1e9", "0000", "--", "Ra8 Re8", "Ra8#" * 5, "Kh1h2"]:
        assert not ok("checkmate_in_one", meta, body), body


def test_generated_chess_positions_are_legal_with_decoy_checks():
    for seed in range(15):
        board = chess.Board(TASKS["checkmate_in_one"].generate(seed, "hard").metadata["fen"])
        assert board.is_valid() and not board.is_game_over()
        mates = mating_moves(board)
        checks = [m for m in board.legal_moves if board.gives_check(m)]
        assert mates and len(checks) - len(mates) >= 2


def test_tic_tac_toe_accepts_all_and_only_optimal_moves():
    empty = {"board": "........."}  # every opening move draws with perfect play
    assert all(ok("tic_tac_toe", empty, f"({r},{c})") for r in (1, 2, 3) for c in (1, 2, 3))
    twice = {"board": "X.X" ".OO" "X.O"}  # X wins at once in row 1 or column 1
    assert sorted(optimal_moves(twice["board"])) == [1, 3]
    assert ok("tic_tac_toe", twice, "(1,2)") and ok("tic_tac_toe", twice, "(2,1)")
    assert not ok("tic_tac_toe", twice, "(3,2)")  # lets O complete row 2
    assert not ok("tic_tac_toe", twice, "(1,1)")  # occupied
    assert not ok("tic_tac_toe", twice, "(1,2) (2,1)")
    # O to move must block X's row; anything else loses
    block = {"board": "XX." ".O." "..."}
    assert optimal_moves(block["board"]) == [2]
    assert ok("tic_tac_toe", block, "(1,3)") and not ok("tic_tac_toe", block, "(2,2)")
