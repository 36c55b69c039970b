"""Move-sequence puzzles on small boards: twiddle, sliding tiles, row/column shifts.

A board is a tuple of ints in row-major order. Each puzzle kind is a small rules object with
``apply(board, move) -> board | None`` (None: unknown or illegal move), its ``goal`` board, the
step used while scrambling and the move that undoes it. One scrambler and one checker then serve
the five board tasks of the Sequential category.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

Board = tuple[int, ...]


@dataclass(frozen=True)
class TwiddleRules:
    """n x n board of 1..n*n; a move turns one 2x2 block clockwise.

    Blocks are named A, B, C, ... in row-major order of their top-left cell (on 3x3: A top-left,
    B top-right, C bottom-left, D bottom-right). Scrambling turns blocks counter-clockwise, so a
    scramble of k steps is undone by k clockwise moves.
    """

    size: int = 3
    moves: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "moves", tuple(chr(ord("A") + i) for i in range((self.size - 1) ** 2)))

    @property
    def goal(self) -> Board:
        return tuple(range(1, self.size * self.size + 1))

    def _corners(self, move: str) -> tuple[int, int, int, int] | None:
        """Cell indexes (top-left, top-right, bottom-right, bottom-left) of block ``move``."""
        if move not in self.moves:
            return None
        r, c = divmod(self.moves.index(move), self.size - 1)
        tl = r * self.size + c
        return tl, tl + 1, tl + self.size + 1, tl + self.size

    def _turn(self, board: Board, move: str, clockwise: bool) -> Board | None:
        corners = self._corners(move)
        if corners is None:
            return None
        tl, tr, br, bl = corners
        cells = list(board)
        if clockwise:  # each number goes to the next corner clockwise
            cells[tr], cells[br], cells[bl], cells[tl] = board[tl], board[tr], board[br], board[bl]
        else:
            cells[bl], cells[br], cells[tr], cells[tl] = board[tl], board[bl], board[br], board[tr]
        return tuple(cells)

    def apply(self, board: Board, move: str) -> Board | None:
        return self._turn(board, move, clockwise=True)

    def scramble_step(self, board: Board, move: str) -> Board | None:
        return self._turn(board, move, clockwise=False)

    def undo(self, move: str) -> str:
        return move

    def null_cycle(self) -> list[str]:
        """Moves that return any board to itself (four quarter turns)."""
        return ["A"] * 4


_OPPOSITE = {"U": "D", "D": "U", "L": "R", "R": "L"}


@dataclass(frozen=True)
class SlidingRules:
    """width x height sliding-tile board; 0 is the blank, goal 1..N-1 then the blank.

    A move names the direction the BLANK travels: U swaps it with the tile above, D below, L to
    the left, R to the right; moving it off the board is illegal.
    """

    width: int
    height: int
    moves: tuple[str, ...] = ("U", "D", "L", "R")

    @property
    def goal(self) -> Board:
        return tuple(range(1, self.width * self.height)) + (0,)

    def apply(self, board: Board, move: str) -> Board | None:
        blank = board.index(0)
        r, c = divmod(blank, self.width)
        if move == "U" and r > 0:
            other = blank - self.width
        elif move == "D" and r < self.height - 1:
            other = blank + self.width
        elif move == "L" and c > 0:
            other = blank - 1
        elif move == "R" and c < self.width - 1:
            other = blank + 1
        else:
            return None
        cells = list(board)
        cells[blank], cells[other] = cells[other], 0
        return tuple(cells)

    scramble_step = apply

    def undo(self, move: str) -> str:
        return _OPPOSITE[move]

    def null_cycle(self) -> list[str]:
        """From the goal (blank bottom-right) up and back down."""
        return ["U", "D"]


@dataclass(frozen=True)
class ShiftRules:
    """n x n board of 1..n*n; a move cyclically shifts one row or column by one place.

    ``Lr``/``Rr`` shift row r (1 = top) left/right, ``Uc``/``Dc`` shift column c (1 = left)
    up/down; the number pushed off one end re-enters at the other.
    """

    size: int
    moves: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        names = tuple(f"{d}{i}" for d in "LRUD" for i in range(1, self.size + 1))
        object.__setattr__(self, "moves", names)

    @property
    def goal(self) -> Board:
        return tuple(range(1, self.size * self.size + 1))

    def apply(self, board: Board, move: str) -> Board | None:
        if move not in self.moves:
            return None
        n = self.size
        direction, line = move[0], int(move[1:]) - 1
        if direction in "LR":
            cells = [line * n + c for c in range(n)]
        else:
            cells = [r * n + line for r in range(n)]
        values = [board[i] for i in cells]
        values = values[1:] + values[:1] if direction in "LU" else values[-1:] + values[:-1]
        out = list(board)
        for i, v in zip(cells, values):
            out[i] = v
        return tuple(out)

    scramble_step = apply

    def undo(self, move: str) -> str:
        return _OPPOSITE[move[0]] + move[1:]

    def null_cycle(self) -> list[str]:
        return ["L1", "R1"]


Rules = TwiddleRules | SlidingRules | ShiftRules


def scramble(rules: Rules, rng: random.Random, depth: int) -> tuple[Board, list[str]]:
    """A self-avoiding random walk of ``depth`` scramble steps from the goal.

    Returns the scrambled board and the moves that solve it (the walk undone in reverse). No
    board repeats along the walk, so every proper prefix of the solution stops short of the goal.
    The walk may end early in a dead end (never on these board sizes in practice).
    """
    board = rules.goal
    seen = {board}
    undo_moves: list[str] = []
    for _ in range(depth):
        options = []
        for move in rules.moves:
            nxt = rules.scramble_step(board, move)
            if nxt is not None and nxt not in seen:
                options.append((move, nxt))
        if not options:
            break
        move, board = rng.choice(options)
        seen.add(board)
        undo_moves.append(rules.undo(move))
    return board, undo_moves[::-1]


def parse_moves(body: str, max_moves: int) -> list[str] | None:
    """Moves separated by spaces or commas, upper-cased; None when more than ``max_moves``."""
    if len(body) > 8 * max_moves + 64:
        return None
    tokens = body.replace(",", " ").upper().split()
    return tokens if len(tokens) <= max_moves else None


def play(rules: Rules, board: Board, moves: list[str]) -> Board | None:
    """The board after ``moves``; None at the first unknown or illegal move."""
    for move in moves:
        board = rules.apply(board, move)
        if board is None:
            return None
    return board


def permutation_parity(values: Board) -> int:
    """0 for an even permutation of its sorted values, 1 for an odd one (by cycle count)."""
    position = {v: i for i, v in enumerate(sorted(values))}
    target = [position[v] for v in values]
    seen = [False] * len(target)
    parity = 0
    for start in range(len(target)):
        length = 0
        i = start
        while not seen[i]:
            seen[i] = True
            i = target[i]
            length += 1
        if length:
            parity ^= (length - 1) & 1
    return parity


def sliding_solvable(board: Board, width: int, height: int) -> bool:
    """Whether a sliding board reaches the goal (blank bottom-right).

    Every move is one transposition (flips the permutation parity, blank counted as a tile) and
    moves the blank one step (flips the parity of its taxicab distance to the bottom-right
    corner), so the two parities must agree; for boards of at least 2x2 that is also sufficient.
    """
    blank = board.index(0)
    r, c = divmod(blank, width)
    distance = (height - 1 - r) + (width - 1 - c)
    as_goal_order = tuple(v if v else width * height for v in board)  # blank sorts last
    return permutation_parity(as_goal_order) == distance % 2


def swap_two_tiles(board: Board, rng: random.Random) -> Board:
    """The board with two random non-blank numbers exchanged (flips the permutation parity)."""
    cells = [i for i, v in enumerate(board) if v != 0]
    a, b = rng.sample(cells, 2)
    out = list(board)
    out[a], out[b] = out[b], out[a]
    return tuple(out)


def board_rows(board: Board, width: int) -> str:
    """One row per line, numbers separated by spaces."""
    return "\n".join(" ".join(str(v) for v in board[i : i + width]) for i in range(0, len(board), width))
