"""Minesweeper: a partially revealed board; place the stated number of mines on hidden cells so
that every revealed number equals its count of neighbouring mines (8-neighbourhood).

The hidden cells are all mines plus a fraction of the safe cells; the true layout is one
solution and the verifier accepts ANY layout consistent with the revealed numbers and the mine
total (no uniqueness claim, so no exponential uniqueness solver is needed at generation time).
Boards are 8x8 / 10x10 / 12x12 (smaller than Enigmata's 9 / 12 / 16) so the answer, a list of
mine coordinates, stays short enough for a small model; mine densities follow Enigmata.
"""

from __future__ import annotations

from datamodules.enigmata.base import Task, register
from datamodules.enigmata.search_parsing import format_coordinates, parse_coordinates
from lit_reason.tasks.answer import extract_answer


def neighbours(n: int, r: int, c: int) -> list[tuple[int, int]]:
    return [
        (r + dr, c + dc)
        for dr in (-1, 0, 1)
        for dc in (-1, 0, 1)
        if (dr or dc) and 0 <= r + dr < n and 0 <= c + dc < n
    ]


def check_mines(board: list[str], mines: list[tuple[int, int]], total: int) -> bool:
    """``board`` rows hold digits (revealed) or '?' (hidden); ``mines`` are 0-based cells."""
    n = len(board)
    placed = set(mines)
    if len(placed) != len(mines) or len(placed) != total:
        return False
    if any(not (0 <= r < n and 0 <= c < n) or board[r][c] != "?" for r, c in placed):
        return False
    for r in range(n):
        for c in range(n):
            if board[r][c] != "?" and int(board[r][c]) != sum(cell in placed for cell in neighbours(n, r, c)):
                return False
    return True


@register
class Minesweeper(Task):
    name = "minesweeper"
    category = "Search"
    presets = {
        "easy": {"size": 8, "density": 0.10, "hidden_safe": 0.15},
        "medium": {"size": 10, "density": 0.15, "hidden_safe": 0.2},
        "hard": {"size": 12, "density": 0.20, "hidden_safe": 0.25},
    }
    test_knobs = [{"size": 4, "density": 0.3}, {"size": 16, "density": 0.2}]

    def build(self, rng, size, density, hidden_safe):
        n = size
        cells = [(r, c) for r in range(n) for c in range(n)]
        mines = set(rng.sample(cells, max(1, round(density * n * n))))
        safe = [cell for cell in cells if cell not in mines]
        hidden = mines | set(rng.sample(safe, round(hidden_safe * len(safe))))
        board = [
            "".join(
                "?" if (r, c) in hidden else str(sum(cell in mines for cell in neighbours(n, r, c)))
                for c in range(n)
            )
            for r in range(n)
        ]
        question = (
            f"This {n}x{n} Minesweeper board has {len(mines)} mines. A digit is a revealed safe cell showing how many "
            "of its up to 8 neighbouring cells (including diagonals) hold a mine; '?' is a hidden cell that may "
            f"or may not hold a mine. Rows are numbered 1 to {n} from the top, columns 1 to {n} from the left.\n"
            + "\n".join(" ".join(row) for row in board)
            + f"\n\nPlace all {len(mines)} mines on hidden cells so that every revealed digit is correct. Answer with "
            "the mine cells as (row,column) pairs separated by spaces, for example (1,3) (4,2) ... . Any placement "
            "consistent with all digits and the mine count is accepted."
        )
        return question, format_coordinates(sorted(mines)), {"board": board, "mines": len(mines)}

    def verify(self, answer, metadata):
        board = metadata["board"]
        pairs = parse_coordinates(answer, metadata["mines"] + 1)
        if pairs is None:
            return False
        return check_mines(board, [(r - 1, c - 1) for r, c in pairs], metadata["mines"])

    def corruptions(self, puzzle, rng):
        board = puzzle.metadata["board"]
        n = len(board)
        mines = [(r - 1, c - 1) for r, c in parse_coordinates(extract_answer(puzzle.answer), n * n)]
        revealed = [(r, c) for r in range(n) for c in range(n) if board[r][c] != "?"]
        spare = [(r, c) for r in range(n) for c in range(n) if board[r][c] == "?" and (r, c) not in mines]
        out = [format_coordinates(sorted(mines[:-1])), format_coordinates(sorted(mines)) + " " + format_coordinates([mines[0]]), format_coordinates(sorted([*mines[:-1], (n, 0)]))]
        if revealed:
            out.append(format_coordinates(sorted([*mines[:-1], rng.choice(revealed)])))  # a mine on a revealed cell
        if spare:
            out.append(format_coordinates(sorted([*mines, rng.choice(spare)])))  # one mine too many
        return out
