"""Full crosswords: fill a small crossword whose clues are anagrams of the answers.

Enigmata drew these from a fixed pool with dictionary definitions; offline we have neither, so
the generator builds the grid itself from the shipped word list (data/words.txt): a first word
across, then words placed one at a time through a letter already on the grid, perpendicular to
the word holding it, never touching other letters side by side (so every run of two or more
letters in the finished grid is exactly one placed word). The clue of each slot is its letters
in scrambled order. The verifier checks the block pattern, that every slot holds a word of the
list, and that each slot's letters are exactly its clue's letters; crossings agree because the
answer is one grid. Any such filling scores 1 (an anagram may have two list words, e.g. "act"
and "cat", when the crossings allow both).
"""

from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path

from datamodules.enigmata.base import Task, register
from datamodules.enigmata.grid_common import GRID_FORMAT, format_grid, gold_body, grid_corruptions, parse_grid

BLOCK, OPEN = "#", "_"
LETTERS = "abcdefghijklmnopqrstuvwxyz"
WORDS_FILE = Path(__file__).parent / "data" / "words.txt"
ACROSS, DOWN = (0, 1), (1, 0)


@lru_cache(maxsize=1)
def word_list() -> tuple[str, ...]:
    """The shipped words (lowercase, 3-7 letters), in file order."""
    try:
        words = tuple(w.strip() for w in WORDS_FILE.read_text(encoding="utf-8").splitlines() if w.strip())
    except OSError as err:
        raise FileNotFoundError(f"full_crosswords: word list {WORDS_FILE} is missing; reinstall the package data ({err})") from None
    if not words or any(not (w.isascii() and w.isalpha() and w.islower()) for w in words):
        raise ValueError(f"full_crosswords: {WORDS_FILE} must hold one lowercase word per line")
    return words


@lru_cache(maxsize=1)
def word_set() -> frozenset[str]:
    return frozenset(word_list())


def runs(cells: dict[tuple[int, int], str], direction: tuple[int, int]) -> list[tuple[int, int, str]]:
    """Maximal runs of two or more letters in ``direction``: (row, col, word), sorted."""
    dr, dc = direction
    found = []
    for (r, c) in sorted(cells):
        if (r - dr, c - dc) in cells:
            continue
        word, rr, cc = "", r, c
        while (rr, cc) in cells:
            word += cells[(rr, cc)]
            rr, cc = rr + dr, cc + dc
        if len(word) >= 2:
            found.append((r, c, word))
    return found


def try_place(cells, used_dir, word, r0, c0, direction, size) -> bool:
    """Place ``word`` at (r0, c0) if it crosses at least one letter perpendicular to its word,
    adds at least one letter, and touches nothing else; return whether it was placed."""
    dr, dc = direction
    end_r, end_c = r0 + dr * (len(word) - 1), c0 + dc * (len(word) - 1)
    if min(r0, c0) < 0 or max(end_r, end_c) >= size:
        return False
    if (r0 - dr, c0 - dc) in cells or (end_r + dr, end_c + dc) in cells:
        return False
    crossings = 0
    for j, letter in enumerate(word):
        r, c = r0 + dr * j, c0 + dc * j
        if (r, c) in cells:
            if cells[(r, c)] != letter or direction in used_dir[(r, c)]:
                return False
            crossings += 1
        elif (r + dc, c + dr) in cells or (r - dc, c - dr) in cells:
            return False
    if crossings == 0 or crossings == len(word):
        return False
    for j, letter in enumerate(word):
        cell = (r0 + dr * j, c0 + dc * j)
        cells[cell] = letter
        used_dir.setdefault(cell, set()).add(direction)
    return True


@lru_cache(maxsize=16)
def words_up_to(size: int) -> tuple[tuple[str, ...], dict[str, list[str]]]:
    """Words fitting a ``size`` box, and for each letter the words containing it (file order)."""
    words = tuple(w for w in word_list() if len(w) <= size)
    by_letter: dict[str, list[str]] = {}
    for w in words:
        for letter in sorted(set(w)):
            by_letter.setdefault(letter, []).append(w)
    return words, by_letter


def build_crossword(rng: random.Random, size: int, n_words: int) -> dict[tuple[int, int], str]:
    """Letters of a crossword inside a ``size`` x ``size`` box with up to ``n_words`` words (the
    best of a few tries)."""
    words, by_letter = words_up_to(size)
    best: dict[tuple[int, int], str] = {}
    best_count = 0
    for _attempt in range(4):
        first = rng.choice(words)
        cells: dict[tuple[int, int], str] = {}
        used_dir: dict[tuple[int, int], set] = {}
        r0, c0 = rng.randrange(size), rng.randrange(size - len(first) + 1)
        for j, letter in enumerate(first):
            cells[(r0, c0 + j)] = letter
            used_dir[(r0, c0 + j)] = {ACROSS}
        placed = {first}
        for _step in range(60):
            if len(placed) >= n_words:
                break
            anchor = rng.choice(sorted(cells))
            direction = DOWN if ACROSS in used_dir[anchor] else ACROSS
            if len(used_dir[anchor]) == 2:
                continue
            candidates = by_letter.get(cells[anchor], [])
            for word in rng.sample(candidates, min(12, len(candidates))):
                if word in placed:
                    continue
                offsets = [j for j, letter in enumerate(word) if letter == cells[anchor]]
                j = rng.choice(offsets)
                r, c = anchor[0] - direction[0] * j, anchor[1] - direction[1] * j
                if try_place(cells, used_dir, word, r, c, direction, size):
                    placed.add(word)
                    break
        slot_words = [w for _, _, w in runs(cells, ACROSS) + runs(cells, DOWN)]
        if sorted(slot_words) != sorted(placed):  # cannot happen by the placement rules; be safe
            continue
        if len(placed) > best_count:
            best, best_count = cells, len(placed)
        if best_count >= n_words:
            break
    return best


@register
class FullCrosswords(Task):
    name = "full_crosswords"
    category = "Grid"
    presets = {
        "easy": {"size": 5, "words": 3},
        "medium": {"size": 7, "words": 5},
        "hard": {"size": 9, "words": 8},
    }
    test_knobs = [{"size": 4, "words": 2}, {"size": 11, "words": 12}]

    def build(self, rng: random.Random, size: int, words: int):
        if size < 3:
            raise ValueError(f"full_crosswords: size must be >= 3, got {size}")
        cells = build_crossword(rng, size, words)
        top = min(r for r, _ in cells)
        left = min(c for _, c in cells)
        height = max(r for r, _ in cells) - top + 1
        width = max(c for _, c in cells) - left + 1
        grid = [[cells.get((top + r, left + c), BLOCK) for c in range(width)] for r in range(height)]
        cropped = {(r, c): v for r, row in enumerate(grid) for c, v in enumerate(row) if v != BLOCK}
        slots = []
        clue_lines = []
        for label, direction in (("Across", ACROSS), ("Down", DOWN)):
            for number, (r, c, word) in enumerate(runs(cropped, direction), start=1):
                letters = list(word)
                for _ in range(5):
                    rng.shuffle(letters)
                    if "".join(letters) != word:
                        break
                scrambled = "".join(letters)
                slots.append([r, c, label.lower(), scrambled])
                clue_lines.append(f"{label} {number}: starts at row {r + 1}, column {c + 1}, {len(word)} letters, an anagram of '{scrambled}'")
        shape = format_grid([[BLOCK if v == BLOCK else OPEN for v in row] for row in grid])
        question = (
            f"Fill in this {height}x{width} crossword. {BLOCK} is a black square, {OPEN} is a square to fill with a "
            "lowercase letter. Every horizontal (Across) or vertical (Down) run of two or more white squares is a "
            "common English word; each clue gives the answer's letters in scrambled order, and crossing words "
            f"share the letter in their common square. Rows and columns are numbered from 1.\n\n{shape}\n\n"
            + "\n".join(clue_lines)
            + f"\n\nAnswer with the filled grid, keeping every {BLOCK}: {GRID_FORMAT} ({height} rows of {width} cells)."
        )
        metadata = {"shape": ["".join("#" if v == BLOCK else "." for v in row) for row in grid], "slots": slots}
        return question, format_grid(grid), metadata

    def verify(self, answer: str, metadata: dict) -> bool:
        shape = metadata["shape"]
        height, width = len(shape), len(shape[0])
        if not isinstance(answer, str) or len(answer) > 4 * height * width + 64:
            return False
        grid = parse_grid(answer.lower(), height, width, tuple(LETTERS) + (BLOCK,), max_token_len=1)
        if grid is None:
            return False
        if any((grid[r][c] == BLOCK) != (shape[r][c] == "#") for r in range(height) for c in range(width)):
            return False
        vocabulary = word_set()
        for r, c, direction, scrambled in metadata["slots"]:
            dr, dc = DOWN if direction == "down" else ACROSS
            word = "".join(grid[r + dr * j][c + dc * j] for j in range(len(scrambled)))
            if word not in vocabulary or sorted(word) != sorted(scrambled):
                return False
        return True

    def corruptions(self, puzzle, rng):
        body = gold_body(puzzle)
        rows = [line.split() for line in body.splitlines()]
        # Swap two different letters inside the first across word: same anagram, but the
        # crossing or the word list rejects it (checked below, kept only when truly wrong).
        extra = []
        r, c, _, scrambled = puzzle.metadata["slots"][0]
        for i in range(len(scrambled)):
            for j in range(i + 1, len(scrambled)):
                swapped = [row[:] for row in rows]
                swapped[r][c + i], swapped[r][c + j] = swapped[r][c + j], swapped[r][c + i]
                candidate = format_grid(swapped)
                if candidate != body and not self.verify(candidate, puzzle.metadata):
                    extra.append(candidate)
                    break
            if extra:
                break
        return grid_corruptions(body, rng, list(LETTERS)) + extra
