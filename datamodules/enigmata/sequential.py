"""Enigmata Sequential tasks: answers are sequences (moves, operations, an order, a list).

Board puzzles (twiddle, the sliding and row/column-shift puzzles) share one scrambler and one
simulator (sequential_moves.py); any move sequence within the stated cap that reaches the goal
scores 1. car_painting, stack_permutation and big_bench_symbolic have their own small rule
modules (sequential_cars / _stack / _lists).
"""

from __future__ import annotations

import random

from lit_reason.tasks.answer import extract_answer

from datamodules.enigmata.base import NO_SOLUTION, Puzzle, Task, register, says_no_solution
from datamodules.enigmata.sequential_cars import colour_changes, max_displacement, optimal_order
from datamodules.enigmata.sequential_lists import (
    FAMILY_TEXT,
    PRIMITIVES,
    apply_chain,
    format_list,
    parse_list,
    query_outputs,
    random_list,
)
from datamodules.enigmata.sequential_moves import (
    Board,
    Rules,
    ShiftRules,
    SlidingRules,
    TwiddleRules,
    board_rows,
    parse_moves,
    permutation_parity,
    play,
    scramble,
    sliding_solvable,
    swap_two_tiles,
)
from datamodules.enigmata.sequential_stack import POP, PUSH, random_operations, run_operations, solve

CATEGORY = "Sequential"
NO_SOLUTION_LINE = f"If the goal cannot be reached from this board, answer exactly: {NO_SOLUTION}"


def _body(puzzle: Puzzle) -> str:
    return extract_answer(puzzle.answer) or ""


def _check_depths(task: str, min_depth: int, max_depth: int, unsolvable_rate: float) -> None:
    if not 1 <= min_depth <= max_depth:
        raise ValueError(f"task {task!r}: need 1 <= min_depth <= max_depth, got {min_depth}, {max_depth}")
    if not 0.0 <= unsolvable_rate <= 1.0:
        raise ValueError(f"task {task!r}: unsolvable_rate must lie in [0, 1], got {unsolvable_rate}")


# --------------------------------------------------------------------------- board puzzles
class _BoardTask(Task):
    """Scramble the goal by a self-avoiding random walk; the gold answer undoes it.

    Unsolvable instances (only where the puzzle has them) swap two numbers of a scrambled board,
    which flips a parity invariant no move changes; ``solvable`` records the exact criterion.
    The answer may use at most ``3 * depth + 10`` moves (stated in the prompt).
    """

    category = CATEGORY
    rules: Rules
    has_unsolvable = False

    def solvable(self, board: Board) -> bool:
        return True

    def describe(self, board: Board, max_moves: int) -> str:
        raise NotImplementedError

    def build(self, rng: random.Random, min_depth: int, max_depth: int, unsolvable_rate: float = 0.0) -> tuple[str, str, dict]:
        _check_depths(self.name, min_depth, max_depth, unsolvable_rate)
        depth = rng.randint(min_depth, max_depth)
        board, solution = scramble(self.rules, rng, depth)
        unsolvable = self.has_unsolvable and rng.random() < unsolvable_rate
        if unsolvable:
            board = swap_two_tiles(board, rng)
        solvable = self.solvable(board)
        if solvable == unsolvable:
            raise AssertionError(f"{self.name}: solvability criterion disagrees with the construction")
        max_moves = 3 * depth + 10
        body = " ".join(solution) if solvable else NO_SOLUTION
        metadata = {"board": list(board), "max_moves": max_moves, "solvable": solvable, "depth": depth}
        return self.describe(board, max_moves), body, metadata

    def verify(self, answer: str, metadata: dict) -> bool:
        if says_no_solution(answer):
            return not metadata["solvable"]
        if not metadata["solvable"]:
            return False
        moves = parse_moves(answer, metadata["max_moves"])
        if moves is None:
            return False
        return play(self.rules, tuple(metadata["board"]), moves) == self.rules.goal

    def corruptions(self, puzzle: Puzzle, rng: random.Random) -> list[str]:
        body = _body(puzzle)
        meta = puzzle.metadata
        cycle = self.rules.null_cycle()
        if not meta["solvable"]:
            moves = [rng.choice(self.rules.moves) for _ in range(4)]
            return ["", " ".join(moves), " ".join(cycle), "A1 B2"]
        moves = body.split()
        too_long = moves + cycle * (meta["max_moves"] // len(cycle) + 1)  # reaches the goal, over the cap
        wrong = [
            NO_SOLUTION,
            " ".join(moves[:-1]),  # truncated: the walk never revisits a board, so not yet solved
            " ".join(moves + [cycle[0]]),  # one move past the goal
            " ".join(["Q"] + moves),  # unknown move name
            " ".join(too_long),
        ]
        if isinstance(self.rules, SlidingRules):
            wrong.append(" ".join(moves + ["R"]))  # the blank sits bottom-right: R is off the board
        return wrong


_TWIDDLE = TwiddleRules(3)


@register
class Twiddle(_BoardTask):
    """twiddle: 3x3 board, clockwise quarter turns of 2x2 blocks.

    Every block turn is a 4-cycle (an odd permutation) and the turns generate all of S9 (group
    order checked once with sympy's Schreier-Sims), so every board is solvable: this task has no
    unsolvable instances.
    """

    name = "twiddle"
    rules = _TWIDDLE
    presets = {
        "easy": {"min_depth": 1, "max_depth": 2},
        "medium": {"min_depth": 3, "max_depth": 4},
        "hard": {"min_depth": 5, "max_depth": 6},
    }
    test_knobs = [{"min_depth": 1, "max_depth": 1}, {"min_depth": 8, "max_depth": 9}]

    def describe(self, board: Board, max_moves: int) -> str:
        example = board_rows(self.rules.apply(self.rules.goal, "A"), 3)
        return (
            "Twiddle puzzle. The 3x3 board holds the numbers 1 to 9:\n"
            f"{board_rows(board, 3)}\n\n"
            f"Goal board:\n{board_rows(self.rules.goal, 3)}\n\n"
            "A move turns one 2x2 block a quarter turn clockwise. The blocks are named by their rows "
            "and columns (numbered from the top-left): A = rows 1-2, columns 1-2 (top-left); "
            "B = rows 1-2, columns 2-3 (top-right); C = rows 2-3, columns 1-2 (bottom-left); "
            "D = rows 2-3, columns 2-3 (bottom-right). Clockwise means the number in the block's "
            "top-left cell moves to its top-right cell, top-right to bottom-right, bottom-right to "
            "bottom-left, and bottom-left to top-left.\n"
            f"Example: move A applied to the goal board gives\n{example}\n\n"
            f"Find a sequence of at most {max_moves} moves that turns the board into the goal board. "
            "Answer with the block letters in order, separated by spaces (for example: A D B)."
        )


class _SlidingTask(_BoardTask):
    """Sliding tiles; unsolvable boards differ from solvable ones by a parity invariant."""

    has_unsolvable = True

    def solvable(self, board: Board) -> bool:
        return sliding_solvable(board, self.rules.width, self.rules.height)

    def describe(self, board: Board, max_moves: int) -> str:
        w, h = self.rules.width, self.rules.height
        example = board_rows(self.rules.apply(self.rules.goal, "U"), w)
        return (
            f"Sliding puzzle on a {w}x{h} board; 0 marks the empty square:\n"
            f"{board_rows(board, w)}\n\n"
            f"Goal board:\n{board_rows(self.rules.goal, w)}\n\n"
            "A move slides the empty square one step and is named by the direction the empty "
            "square travels: U swaps it with the number above it, D with the number below it, "
            "L with the number to its left, R with the number to its right. A move that would "
            "take the empty square off the board is illegal.\n"
            f"Example: move U applied to the goal board gives\n{example}\n\n"
            f"Find a sequence of at most {max_moves} moves that turns the board into the goal board. "
            "Answer with the moves in order, separated by spaces (for example: U L D R). "
            f"{NO_SOLUTION_LINE}"
        )


@register
class EightPuzzle(_SlidingTask):
    """eight_puzzle: 3x3 sliding tiles."""

    name = "eight_puzzle"
    rules = SlidingRules(3, 3)
    presets = {
        "easy": {"min_depth": 4, "max_depth": 8, "unsolvable_rate": 0.15},
        "medium": {"min_depth": 10, "max_depth": 16, "unsolvable_rate": 0.15},
        "hard": {"min_depth": 18, "max_depth": 26, "unsolvable_rate": 0.15},
    }
    test_knobs = [{"unsolvable_rate": 1.0}, {"min_depth": 1, "max_depth": 1, "unsolvable_rate": 0.0}]


@register
class FifteenPuzzle(_SlidingTask):
    """fifteen_puzzle: 4x4 sliding tiles."""

    name = "fifteen_puzzle"
    rules = SlidingRules(4, 4)
    presets = {
        "easy": {"min_depth": 6, "max_depth": 10, "unsolvable_rate": 0.15},
        "medium": {"min_depth": 12, "max_depth": 20, "unsolvable_rate": 0.15},
        "hard": {"min_depth": 22, "max_depth": 34, "unsolvable_rate": 0.15},
    }
    test_knobs = [{"unsolvable_rate": 1.0}, {"min_depth": 40, "max_depth": 50}]


class _ShiftTask(_BoardTask):
    """Row/column cyclic shifts of an n x n board (Enigmata's nine/sixteen puzzles)."""

    def describe(self, board: Board, max_moves: int) -> str:
        n = self.rules.size
        goal = self.rules.goal
        first_row = " ".join(str(v) for v in goal[:n])
        shifted = " ".join(str(v) for v in goal[1:n] + goal[:1])
        no_solution = f" {NO_SOLUTION_LINE}" if self.has_unsolvable else ""
        return (
            f"Shift puzzle on a {n}x{n} board holding the numbers 1 to {n * n}:\n"
            f"{board_rows(board, n)}\n\n"
            f"Goal board:\n{board_rows(goal, n)}\n\n"
            "A move shifts one whole row or column cyclically by one place. Rows are numbered 1 "
            f"to {n} from the top, columns 1 to {n} from the left. Lr shifts row r one place to the "
            "left (its leftmost number wraps around to the right end); Rr shifts row r one place to "
            "the right (the rightmost number wraps to the left end); Uc shifts column c one place up "
            "(the top number wraps to the bottom); Dc shifts column c one place down (the bottom "
            f"number wraps to the top). Example: L1 turns a first row {first_row} into {shifted}.\n\n"
            f"Find a sequence of at most {max_moves} moves that turns the board into the goal board. "
            f"Answer with the moves in order, separated by spaces (for example: L1 D{n} R2 U1).{no_solution}"
        )


@register
class NinePuzzle(_ShiftTask):
    """nine_puzzle: 3x3 row/column shifts.

    Each move is a 3-cycle, an even permutation, so boards that are an odd permutation of the goal
    are unreachable (the moves generate exactly the alternating group A9, order checked once with
    sympy); unsolvable instances swap two numbers of a scrambled board.
    """

    name = "nine_puzzle"
    rules = ShiftRules(3)
    has_unsolvable = True
    presets = {
        "easy": {"min_depth": 2, "max_depth": 3, "unsolvable_rate": 0.15},
        "medium": {"min_depth": 4, "max_depth": 5, "unsolvable_rate": 0.15},
        "hard": {"min_depth": 6, "max_depth": 8, "unsolvable_rate": 0.15},
    }
    test_knobs = [{"unsolvable_rate": 1.0}, {"min_depth": 12, "max_depth": 14, "unsolvable_rate": 0.0}]

    def solvable(self, board: Board) -> bool:
        return permutation_parity(board) == 0


@register
class SixteenPuzzle(_ShiftTask):
    """sixteen_puzzle: 4x4 row/column shifts.

    Each move is a 4-cycle, an odd permutation, and the moves generate all of S16 (checked once
    with sympy): every board is solvable, so this task has no unsolvable instances (and no ``unsolvable_rate`` knob).
    """

    name = "sixteen_puzzle"
    rules = ShiftRules(4)
    presets = {
        "easy": {"min_depth": 2, "max_depth": 4},
        "medium": {"min_depth": 5, "max_depth": 7},
        "hard": {"min_depth": 8, "max_depth": 10},
    }
    test_knobs = [{"min_depth": 1, "max_depth": 1}, {"min_depth": 14, "max_depth": 16}]


# --------------------------------------------------------------------------- car painting
COLOURS = ("red", "blue", "green", "yellow", "white", "black")


@register
class CarPainting(Task):
    """car_painting: reorder cars (each at most K places from its start) to minimise colour changes.

    The optimum is computed exactly (sequential_cars.optimal_order); any valid order reaching it
    scores 1. Instances whose original order is already optimal are redrawn.
    """

    name = "car_painting"
    category = CATEGORY
    presets = {
        "easy": {"n_cars": 6, "max_shift": 1, "n_colours": 2},
        "medium": {"n_cars": 9, "max_shift": 2, "n_colours": 3},
        "hard": {"n_cars": 12, "max_shift": 3, "n_colours": 4},
    }
    test_knobs = [{"n_cars": 4, "max_shift": 1, "n_colours": 2}, {"n_cars": 16, "max_shift": 4, "n_colours": 6}]

    def build(self, rng: random.Random, n_cars: int, max_shift: int, n_colours: int) -> tuple[str, str, dict]:
        if n_cars < 3 or max_shift < 1 or not 2 <= n_colours <= len(COLOURS):
            raise ValueError(f"car_painting: need n_cars >= 3, max_shift >= 1, 2 <= n_colours <= {len(COLOURS)}")
        for _ in range(1000):
            colours = [rng.randrange(n_colours) for _ in range(n_cars)]
            best, order = optimal_order(colours, max_shift)
            if best < colour_changes(colours, list(range(n_cars))):
                break
        else:
            raise RuntimeError("car_painting: no instance with an improvable order in 1000 draws")
        cars = "\n".join(f"car {i + 1}: {COLOURS[c]}" for i, c in enumerate(colours))
        question = (
            f"{n_cars} cars stand in a row, numbered 1 to {n_cars} from left to right, with these colours:\n"
            f"{cars}\n\n"
            "A colour change is a pair of neighbouring cars with different colours. You may reorder the "
            f"cars, but every car must end at most {max_shift} position{'' if max_shift == 1 else 's'} away from where it started "
            f"(car i may stand at positions i-{max_shift} to i+{max_shift}). Find an order with the fewest "
            "possible colour changes. Answer with all the car numbers in their new order from left to "
            "right, separated by spaces (for example: 2 1 3 ...)."
        )
        metadata = {"colours": colours, "max_shift": max_shift, "optimum": best}
        return question, " ".join(str(c + 1) for c in order), metadata

    def verify(self, answer: str, metadata: dict) -> bool:
        colours = metadata["colours"]
        n = len(colours)
        if len(answer) > 4 * n + 64:
            return False
        tokens = answer.replace(",", " ").split()
        if len(tokens) != n or not all(t.isascii() and t.isdigit() and len(t) <= 3 for t in tokens):
            return False
        order = [int(t) - 1 for t in tokens]
        if sorted(order) != list(range(n)):
            return False
        return max_displacement(order) <= metadata["max_shift"] and colour_changes(colours, order) <= metadata["optimum"]

    def corruptions(self, puzzle: Puzzle, rng: random.Random) -> list[str]:
        ids = _body(puzzle).split()
        n = len(ids)
        far = ids[1:] + ids[:1]  # car moved n-1 > max_shift places: valid permutation, illegal shift
        duplicate = ids[:-1] + ids[:1]
        return [
            " ".join(str(i) for i in range(1, n + 1)),  # the original order: legal but suboptimal
            " ".join(ids[:-1]),
            " ".join(duplicate),
            " ".join(far),
            " ".join(ids + [str(n + 1)]),
        ]


# --------------------------------------------------------------------------- stack permutation
@register
class StackPermutation(Task):
    """stack_permutation: the push/pop sequence turning an input order into a target output.

    With distinct numbers the sequence is unique when it exists (see sequential_stack), so the
    verifier simulates the answer and compares outputs; unreachable targets answer no solution.
    """

    name = "stack_permutation"
    category = CATEGORY
    presets = {
        "easy": {"n": 4, "unsolvable_rate": 0.2},
        "medium": {"n": 6, "unsolvable_rate": 0.2},
        "hard": {"n": 9, "unsolvable_rate": 0.2},
    }
    test_knobs = [{"n": 3, "unsolvable_rate": 1.0}, {"n": 14, "unsolvable_rate": 0.0}]

    def build(self, rng: random.Random, n: int, unsolvable_rate: float) -> tuple[str, str, dict]:
        if n < 3 or not 0.0 <= unsolvable_rate <= 1.0:
            raise ValueError(f"stack_permutation: need n >= 3 and unsolvable_rate in [0, 1], got {n}, {unsolvable_rate}")
        inputs = rng.sample(range(1, 10 * n), n)
        if rng.random() < unsolvable_rate:
            target = list(inputs)
            while solve(inputs, target) is not None:
                rng.shuffle(target)
        else:
            target = run_operations(inputs, random_operations(n, rng))
        operations = solve(inputs, target)
        question = (
            f"Numbers arrive in this order: {' '.join(map(str, inputs))}\n"
            f"Target output: {' '.join(map(str, target))}\n\n"
            "You have an empty stack. The operation push puts the next arriving number on top of the "
            "stack; the operation pop removes the top number of the stack and appends it to the output. "
            f"Use exactly {n} pushes and {n} pops so that the output equals the target output. Answer "
            "with the operations in order, separated by spaces (for example: push push pop pop). If the "
            f"target output cannot be produced, answer exactly: {NO_SOLUTION}"
        )
        body = " ".join(operations) if operations else NO_SOLUTION
        metadata = {"inputs": inputs, "target": target, "solvable": operations is not None}
        return question, body, metadata

    def verify(self, answer: str, metadata: dict) -> bool:
        if says_no_solution(answer):
            return not metadata["solvable"]
        n = len(metadata["inputs"])
        if not metadata["solvable"] or len(answer) > 12 * n + 64:
            return False
        operations = answer.replace(",", " ").lower().split()
        return run_operations(metadata["inputs"], operations) == metadata["target"]

    def corruptions(self, puzzle: Puzzle, rng: random.Random) -> list[str]:
        n = len(puzzle.metadata["inputs"])
        if not puzzle.metadata["solvable"]:
            return [" ".join([PUSH] * n + [POP] * n), " ".join([PUSH, POP] * n), ""]
        ops = _body(puzzle).split()
        i = next(j for j in range(len(ops) - 1) if ops[j] != ops[j + 1])
        swapped = ops[:i] + [ops[i + 1], ops[i]] + ops[i + 2 :]  # another sequence: unique answer breaks
        return [NO_SOLUTION, " ".join(ops[:-1]), " ".join([POP] + ops), " ".join(swapped), " ".join(ops + [POP])]


# --------------------------------------------------------------------------- list functions
@register
class BigBenchSymbolic(Task):
    """big_bench_symbolic: infer a hidden list function from examples and apply it to a query.

    Generated from a composable family (sequential_lists) instead of a fixed pool. An instance is
    kept only if every composition of at most ``depth`` primitives consistent with the examples
    gives the same query output, so the answer is determined by the examples and the stated family.
    Hard stays at depth 2 (fewer examples, longer lists): the exact check at depth 3 enumerates
    ~90k compositions, about 100 ms per item, against about 3 ms at depth 2.
    """

    name = "big_bench_symbolic"
    category = CATEGORY
    presets = {
        "easy": {"depth": 1, "n_examples": 4, "min_len": 3, "max_len": 6},
        "medium": {"depth": 2, "n_examples": 5, "min_len": 4, "max_len": 7},
        "hard": {"depth": 2, "n_examples": 4, "min_len": 5, "max_len": 9},
    }
    test_knobs = [{"depth": 1, "n_examples": 6}, {"depth": 2, "n_examples": 3, "min_len": 2, "max_len": 4}]

    def build(self, rng: random.Random, depth: int, n_examples: int, min_len: int, max_len: int) -> tuple[str, str, dict]:
        if not 1 <= depth <= 3 or n_examples < 1 or not 0 <= min_len <= max_len <= 20:
            raise ValueError("big_bench_symbolic: need depth in 1..3, n_examples >= 1, 0 <= min_len <= max_len <= 20")
        for _ in range(2000):
            chain = [rng.randrange(len(PRIMITIVES)) for _ in range(depth)]
            inputs = [random_list(rng, min_len, max_len) for _ in range(n_examples + 1)]
            outputs = [apply_chain(chain, xs) for xs in inputs]
            examples = list(zip(inputs[:-1], outputs[:-1]))
            if all(x == y for x, y in examples) or 2 * sum(not y for _, y in examples) > n_examples:
                continue  # looks like the identity, or mostly empty outputs: uninformative
            if len(query_outputs(examples, inputs[-1], depth)) == 1:
                break
        else:
            raise RuntimeError("big_bench_symbolic: no identifiable instance in 2000 draws")
        shown = "\n".join(f"{format_list(x)} -> {format_list(y)}" for x, y in examples)
        ops = "a single operation" if depth == 1 else f"a composition of at most {depth} operations, applied one after another,"
        question = (
            f"A hidden function turns a list of integers into another list. It is {ops} "
            "from this family:\n"
            f"{FAMILY_TEXT}\n\n"
            f"Examples:\n{shown}\n\n"
            f"What does the function return for {format_list(inputs[-1])}? Answer with the list in the "
            "same bracket format, for example [4, 0, 7] (write [] for an empty list)."
        )
        metadata = {
            "examples": [[list(x), list(y)] for x, y in examples],
            "query": list(inputs[-1]),
            "expected": list(outputs[-1]),
            "functions": [PRIMITIVES[i][0] for i in chain],
        }
        return question, format_list(outputs[-1]), metadata

    def verify(self, answer: str, metadata: dict) -> bool:
        got = parse_list(answer)
        return got is not None and list(got) == metadata["expected"]

    def corruptions(self, puzzle: Puzzle, rng: random.Random) -> list[str]:
        expected = puzzle.metadata["expected"]
        if expected:
            i = rng.randrange(len(expected))
            wrong_element = expected[:i] + [expected[i] + 1] + expected[i + 1 :]
            shorter = expected[:-1]
        else:
            wrong_element, shorter = [0], [1, 2]
        body = format_list(tuple(expected))
        return [format_list(tuple(wrong_element)), format_list(tuple(shorter)), body[:-1], body + ", 3]", NO_SOLUTION]
