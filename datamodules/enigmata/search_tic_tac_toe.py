"""Tic-tac-toe: a reachable mid-game board (X moved first, random legal play, nobody has won
yet); answer one cell for the player to move. The verifier accepts every move whose exact
minimax value (win > draw > loss, speed of the win ignored) equals the best available, so all
optimal moves score 1.
"""

from __future__ import annotations

from functools import lru_cache

from datamodules.enigmata.base import Task, register
from datamodules.enigmata.search_parsing import format_coordinates, parse_coordinates
from lit_reason.tasks.answer import extract_answer

LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))


def winner(board: str) -> str | None:
    """'X' or 'O' if that player has three in a line; ``board`` is 9 chars of 'X', 'O', '.'."""
    for a, b, c in LINES:
        if board[a] != "." and board[a] == board[b] == board[c]:
            return board[a]
    return None


def to_move(board: str) -> str:
    return "X" if board.count("X") == board.count("O") else "O"


@lru_cache(maxsize=None)
def value(board: str) -> int:
    """Game value for the player to move: +1 win, 0 draw, -1 loss (exact minimax)."""
    if winner(board) is not None:
        return -1  # the previous player just completed a line
    moves = [i for i in range(9) if board[i] == "."]
    if not moves:
        return 0
    player = to_move(board)
    return max(-value(board[:i] + player + board[i + 1 :]) for i in moves)


def optimal_moves(board: str) -> list[int]:
    """Indices (row * 3 + col) of every move reaching the board's minimax value."""
    player = to_move(board)
    scores = {i: -value(board[:i] + player + board[i + 1 :]) for i in range(9) if board[i] == "."}
    best = max(scores.values())
    return [i for i, s in scores.items() if s == best]


@register
class TicTacToe(Task):
    name = "tic_tac_toe"
    category = "Search"
    presets = {
        "easy": {"plies_min": 1, "plies_max": 4, "max_optimal_fraction": 1.0},
        "medium": {"plies_min": 2, "plies_max": 6, "max_optimal_fraction": 0.6},
        "hard": {"plies_min": 3, "plies_max": 7, "max_optimal_fraction": 0.34},
    }
    test_knobs = [{"plies_min": 0, "plies_max": 0, "max_optimal_fraction": 1.0}, {"plies_min": 7, "plies_max": 7}]

    def build(self, rng, plies_min, plies_max, max_optimal_fraction):
        for _ in range(10_000):
            board = "." * 9
            for _ in range(rng.randint(plies_min, plies_max)):
                free = [i for i in range(9) if board[i] == "."]
                i = rng.choice(free)
                board = board[:i] + to_move(board) + board[i + 1 :]
                if winner(board):
                    break
            if winner(board) or "." not in board:
                continue
            best = optimal_moves(board)
            if len(best) <= max_optimal_fraction * board.count("."):
                break
        else:
            raise ValueError(f"tic_tac_toe: no board with {plies_min}-{plies_max} plies has at most "
                             f"{max_optimal_fraction} of its moves optimal; raise max_optimal_fraction")
        player = to_move(board)
        question = (
            "Tic-tac-toe board (rows 1 to 3 from the top, columns 1 to 3 from the left; '.' is empty):\n"
            + "\n".join(" ".join(board[3 * r : 3 * r + 3]) for r in range(3))
            + f"\n\nIt is {player}'s turn (X moved first). Both players play perfectly from now on. Give a best move "
            f"for {player}: one that wins if a win can be forced, otherwise one that avoids losing if possible. "
            "Answer with the cell as (row,column), for example (2,3). Any optimal move is accepted."
        )
        r, c = divmod(best[0], 3)
        return question, format_coordinates([(r, c)]), {"board": board}

    def verify(self, answer, metadata):
        board = metadata["board"]
        pairs = parse_coordinates(answer, 1)
        if not pairs or len(pairs) != 1:
            return False
        r, c = pairs[0]
        return 1 <= r <= 3 and 1 <= c <= 3 and (r - 1) * 3 + (c - 1) in optimal_moves(board)

    def corruptions(self, puzzle, rng):
        board = puzzle.metadata["board"]
        best = optimal_moves(board)
        cell = lambda i: f"({i // 3 + 1},{i % 3 + 1})"  # noqa: E731
        out = ["(4,1)", "(0,2)", extract_answer(puzzle.answer) + " (1,1)"]
        taken = [i for i in range(9) if board[i] != "."]
        worse = [i for i in range(9) if board[i] == "." and i not in best]
        if taken:
            out.append(cell(rng.choice(taken)))  # an occupied cell
        if worse:
            out.append(cell(rng.choice(worse)))  # a legal but suboptimal move
        return out
