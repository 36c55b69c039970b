"""Sequential Enigmata tasks: gold answers pass, corruptions fail, and the rules are checked
against hand-computed boards and brute-force references (BFS, permutation enumeration)."""

from __future__ import annotations

import itertools
import random
from collections import deque

import pytest

from datamodules.enigmata import TASKS
from datamodules.enigmata.base import DIFFICULTIES, NO_SOLUTION
from datamodules.enigmata.sequential_cars import colour_changes, max_displacement, optimal_order
from datamodules.enigmata.sequential_lists import PRIMITIVES, apply_chain, parse_list, query_outputs
from datamodules.enigmata.sequential_moves import (
    ShiftRules,
    SlidingRules,
    TwiddleRules,
    permutation_parity,
    play,
    scramble,
    sliding_solvable,
)
from datamodules.enigmata.sequential_stack import run_operations, solve
from lit_reason.tasks.answer import format_answer



def score(task: str, metadata: dict, body: str) -> bool:
    return TASKS[task].verify(body, metadata)


@pytest.mark.parametrize("name", ["eight_puzzle", "fifteen_puzzle", "nine_puzzle", "stack_permutation"])
def test_unsolvable_rate_is_moderate_and_flag_matches_gold(name):
    task = TASKS[name]
    flags = [task.generate(seed, "medium").metadata["solvable"] for seed in range(100)]
    assert 5 <= flags.count(False) <= 35
    unsolvable = next(task.generate(s, "medium") for s in range(100) if not flags[s])
    assert unsolvable.score(format_answer(NO_SOLUTION)) == 1.0
    assert unsolvable.score(format_answer("No Solution")) == 1.0


def test_bad_knobs_give_one_clear_error():
    with pytest.raises(ValueError, match="min_depth"):
        TASKS["eight_puzzle"].generate(0, "easy", min_depth=5, max_depth=2)
    with pytest.raises(ValueError, match="n_colours"):
        TASKS["car_painting"].generate(0, "easy", n_colours=1)
    with pytest.raises(ValueError, match="unknown knob"):
        TASKS["sixteen_puzzle"].generate(0, "easy", unsolvable_rate=0.5)


# --------------------------------------------------------------------------- twiddle
def test_twiddle_turns_by_hand():
    rules = TwiddleRules(3)
    goal = rules.goal
    assert rules.apply(goal, "A") == (4, 1, 3, 5, 2, 6, 7, 8, 9)
    assert rules.apply(goal, "B") == (1, 5, 2, 4, 6, 3, 7, 8, 9)
    assert rules.apply(goal, "C") == (1, 2, 3, 7, 4, 6, 8, 5, 9)
    assert rules.apply(goal, "D") == (1, 2, 3, 4, 8, 5, 7, 9, 6)
    assert rules.apply(goal, "E") is None
    for move in rules.moves:
        assert rules.scramble_step(rules.apply(goal, move), move) == goal
        assert play(rules, goal, [move] * 4) == goal


def test_twiddle_alternative_solution_and_violations():
    # counter-clockwise turn of A on the goal: solved by one clockwise A, or by five.
    meta = {"board": [2, 5, 3, 1, 4, 6, 7, 8, 9], "max_moves": 13, "solvable": True}
    assert score("twiddle", meta, "A")
    assert score("twiddle", meta, "A A A A A")
    assert score("twiddle", meta, "a, a, a, a, a")
    assert not score("twiddle", meta, "B")
    assert not score("twiddle", meta, "A " * 17)  # 17 quarter turns end solved but exceed the cap 13
    assert not score("twiddle", meta, "A E")
    assert not score("twiddle", meta, NO_SOLUTION)


# --------------------------------------------------------------------------- sliding puzzles
def reachable(rules, start) -> set:
    seen = {start}
    queue = deque([start])
    while queue:
        board = queue.popleft()
        for move in rules.moves:
            nxt = rules.apply(board, move)
            if nxt is not None and nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen


@pytest.mark.parametrize("width,height", [(2, 2), (2, 3), (3, 2), (2, 4)])
def test_sliding_parity_criterion_matches_bfs(width, height):
    rules = SlidingRules(width, height)
    solvable = reachable(rules, rules.goal)
    boards = list(itertools.permutations(range(width * height)))
    assert len(solvable) * 2 == len(boards)
    for board in boards:
        assert sliding_solvable(board, width, height) == (board in solvable)


def test_sliding_moves_by_hand():
    rules = SlidingRules(3, 3)
    assert rules.apply(rules.goal, "U") == (1, 2, 3, 4, 5, 0, 7, 8, 6)
    assert rules.apply(rules.goal, "L") == (1, 2, 3, 4, 5, 6, 7, 0, 8)
    assert rules.apply(rules.goal, "D") is None
    assert rules.apply(rules.goal, "R") is None


def test_eight_puzzle_alternative_solution_and_violations():
    meta = {"board": [1, 2, 3, 4, 5, 6, 7, 0, 8], "max_moves": 13, "solvable": True}
    assert score("eight_puzzle", meta, "R")
    assert score("eight_puzzle", meta, "L R R")
    assert score("eight_puzzle", meta, "r u d")
    assert not score("eight_puzzle", meta, "D R")  # D takes the blank off the board
    assert not score("eight_puzzle", meta, "L")
    assert not score("eight_puzzle", meta, "")
    assert not score("eight_puzzle", meta, NO_SOLUTION)
    unsolvable = {"board": [2, 1, 3, 4, 5, 6, 7, 8, 0], "max_moves": 13, "solvable": False}
    assert not sliding_solvable(tuple(unsolvable["board"]), 3, 3)
    assert score("eight_puzzle", unsolvable, NO_SOLUTION)
    assert not score("eight_puzzle", unsolvable, "U D")


def test_fifteen_puzzle_needs_blank_row_in_parity():
    # one swap of the last two tiles: odd permutation, blank home -> unsolvable (Loyd's 14-15)
    loyd = tuple(range(1, 14)) + (15, 14, 0)
    assert not sliding_solvable(loyd, 4, 4)
    # blank moved up one row: transposition and distance 1 -> solvable
    assert sliding_solvable(SlidingRules(4, 4).apply(SlidingRules(4, 4).goal, "U"), 4, 4)


@pytest.mark.parametrize("name", ["twiddle", "eight_puzzle", "fifteen_puzzle", "nine_puzzle", "sixteen_puzzle"])
def test_gold_path_never_passes_the_goal_early(name):
    task = TASKS[name]
    for seed in range(20):
        puzzle = task.generate(seed, "hard")
        if not puzzle.metadata["solvable"]:
            continue
        moves = puzzle.answer.removeprefix("<answer>").removesuffix("</answer>").split()
        assert 1 <= len(moves) <= puzzle.metadata["depth"]
        board = tuple(puzzle.metadata["board"])
        for move in moves[:-1]:
            board = task.rules.apply(board, move)
            assert board != task.rules.goal


def test_scramble_is_self_avoiding():
    rules = SlidingRules(3, 3)
    board, solution = scramble(rules, random.Random(1), 30)
    seen = {board}
    for move in solution:
        board = rules.apply(board, move)
        assert board not in seen
        seen.add(board)
    assert board == rules.goal and len(solution) == 30


# --------------------------------------------------------------------------- shift puzzles
def test_shift_moves_by_hand():
    rules = ShiftRules(3)
    goal = rules.goal
    assert rules.apply(goal, "L1") == (2, 3, 1, 4, 5, 6, 7, 8, 9)
    assert rules.apply(goal, "R3") == (1, 2, 3, 4, 5, 6, 9, 7, 8)
    assert rules.apply(goal, "U2") == (1, 5, 3, 4, 8, 6, 7, 2, 9)
    assert rules.apply(goal, "D1") == (7, 2, 3, 1, 5, 6, 4, 8, 9)
    assert rules.apply(goal, "L4") is None and rules.apply(goal, "X1") is None


def test_shift_move_parity_backs_the_unsolvable_claim():
    """3x3 moves are 3-cycles (even): odd boards are unreachable. 4x4 moves are 4-cycles (odd)."""
    for size, parity in ((3, 0), (4, 1)):
        rules = ShiftRules(size)
        for move in rules.moves:
            assert permutation_parity(rules.apply(rules.goal, move)) == parity


def test_nine_puzzle_alternative_solution_and_violations():
    meta = {"board": [2, 3, 1, 4, 5, 6, 7, 8, 9], "max_moves": 10, "solvable": True}
    assert score("nine_puzzle", meta, "R1")
    assert score("nine_puzzle", meta, "L1 L1")
    assert score("nine_puzzle", meta, "u2 d2 r1")
    assert not score("nine_puzzle", meta, "L1")
    assert not score("nine_puzzle", meta, "R4")
    assert not score("nine_puzzle", meta, NO_SOLUTION)
    odd = {"board": [2, 1, 3, 4, 5, 6, 7, 8, 9], "max_moves": 10, "solvable": False}
    assert score("nine_puzzle", odd, NO_SOLUTION)
    assert not score("nine_puzzle", odd, "L1 R1")


def test_sixteen_puzzle_alternative_solution():
    rules = ShiftRules(4)
    board = play(rules, rules.goal, ["U3", "L2"])
    meta = {"board": list(board), "max_moves": 16, "solvable": True}
    assert score("sixteen_puzzle", meta, "R2 D3")
    assert score("sixteen_puzzle", meta, "L2 L2 L2 U3 U3 U3")
    assert not score("sixteen_puzzle", meta, "D3 R2")


def test_permutation_parity_by_hand():
    assert permutation_parity((1, 2, 3)) == 0
    assert permutation_parity((2, 1, 3)) == 1
    assert permutation_parity((2, 3, 1)) == 0
    assert permutation_parity((4, 3, 2, 1)) == 0
    assert permutation_parity((2, 3, 4, 1)) == 1


# --------------------------------------------------------------------------- car painting
def brute_force_cars(colours, k):
    n = len(colours)
    return min(
        colour_changes(colours, list(p)) for p in itertools.permutations(range(n)) if max_displacement(list(p)) <= k
    )


def test_car_painting_dp_matches_brute_force():
    rng = random.Random(7)
    for _ in range(60):
        n, k = rng.randint(2, 7), rng.randint(1, 3)
        colours = [rng.randrange(rng.randint(2, 3)) for _ in range(n)]
        best, order = optimal_order(colours, k)
        assert best == brute_force_cars(colours, k), (colours, k)
        assert sorted(order) == list(range(n))
        assert max_displacement(order) <= k and colour_changes(colours, order) == best


def test_car_painting_several_optimal_orders():
    # r b r b r with K = 1: only disjoint neighbour swaps; the optimum is 2 changes, reached three ways.
    meta = {"colours": [0, 1, 0, 1, 0], "max_shift": 1, "optimum": 2}
    assert optimal_order(meta["colours"], 1)[0] == 2
    for order in ("1 3 2 4 5", "1 2 4 3 5", "2 1 3 5 4"):
        assert score("car_painting", meta, order), order
    assert not score("car_painting", meta, "1 2 3 4 5")  # legal, 4 changes
    assert not score("car_painting", meta, "1 3 5 2 4")  # r r r b b but car 5 moves 2 places
    assert not score("car_painting", meta, "1 3 2 4 4")  # not a permutation
    assert not score("car_painting", meta, "1 3 2 4")
    assert not score("car_painting", meta, "1 3 2 4 5 6")
    assert not score("car_painting", meta, "0 1 3 2 4")


# --------------------------------------------------------------------------- stack permutation
def test_stack_solver_matches_brute_force_and_is_unique():
    catalan = {1: 1, 2: 2, 3: 5, 4: 14, 5: 42}
    for n in range(1, 6):
        inputs = random.Random(n).sample(range(1, 50), n)
        produced: dict[tuple, list] = {}
        for ops in itertools.product(("push", "pop"), repeat=2 * n):
            out = run_operations(inputs, list(ops))
            if out is not None:
                produced.setdefault(tuple(out), []).append(list(ops))
        assert len(produced) == catalan[n]
        assert all(len(seqs) == 1 for seqs in produced.values())  # the answer is unique
        for target in itertools.permutations(inputs):
            expected = produced.get(target)
            assert solve(inputs, list(target)) == (expected[0] if expected else None)


def test_stack_permutation_by_hand():
    meta = {"inputs": [1, 2, 3], "target": [2, 3, 1], "solvable": True}
    assert score("stack_permutation", meta, "push push pop push pop pop")
    assert score("stack_permutation", meta, "PUSH PUSH POP PUSH POP POP")
    assert not score("stack_permutation", meta, "push push pop push pop")  # 3 left on the stack
    assert not score("stack_permutation", meta, "pop push push pop push pop pop")  # pop on empty
    assert not score("stack_permutation", meta, "push push pop push pop pop push")  # no input left
    assert not score("stack_permutation", meta, NO_SOLUTION)
    blocked = {"inputs": [1, 2, 3], "target": [3, 1, 2], "solvable": False}
    assert solve([1, 2, 3], [3, 1, 2]) is None
    assert score("stack_permutation", blocked, NO_SOLUTION)
    assert not score("stack_permutation", blocked, "push push push pop pop pop")


# --------------------------------------------------------------------------- big_bench_symbolic
def test_query_outputs_detects_ambiguity():
    examples = [((1, 2), (1, 2, 3))]
    # depth 1: only "append 3" fits; depth 2 also allows "add 1, prepend 1".
    assert query_outputs(examples, (5, 5), 1) == {(5, 5, 3)}
    assert {(5, 5, 3), (1, 6, 6)} <= query_outputs(examples, (5, 5), 2)
    assert query_outputs([((3, 1, 2), (1, 2, 3))], (5, 4), 1) == {(4, 5)}


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_big_bench_examples_determine_the_answer(difficulty):
    """Brute force over every chain of at most ``depth`` primitives, independent of the pruning."""
    task = TASKS["big_bench_symbolic"]
    for seed in range(4):
        meta = task.generate(seed, difficulty).metadata
        examples = [(tuple(x), tuple(y)) for x, y in meta["examples"]]
        depth = len(meta["functions"])
        answers = set()
        for length in range(depth + 1):
            for chain in itertools.product(range(len(PRIMITIVES)), repeat=length):
                if all(apply_chain(list(chain), x) == y for x, y in examples):
                    answers.add(apply_chain(list(chain), tuple(meta["query"])))
        assert answers == {tuple(meta["expected"])}


def test_big_bench_answer_parsing():
    assert parse_list("[1, -2,3 ]") == (1, -2, 3)
    assert parse_list(" [] ") == ()
    for bad in ("1, 2", "[1,,2]", "[1.5]", "[1 2]", "(1, 2)", "[" + "1," * 1000 + "1]", "[１]"):
        assert parse_list(bad) is None, bad
    meta = {"expected": [4, 0, 7]}
    assert score("big_bench_symbolic", meta, "[4,0,7]")
    assert not score("big_bench_symbolic", meta, "[4, 0, 7, 7]")
    assert not score("big_bench_symbolic", meta, "[4, 0, 8]")


def test_stack_permutation_long_gold_fits_the_length_bound():
    puzzle = TASKS["stack_permutation"].generate(0, "medium", n=40, unsolvable_rate=0.0)
    assert puzzle.score(puzzle.answer) == 1.0
