"""Checkmate in one: a chess position (FEN plus a diagram) where the side to move can mate at
once; answer any mating move in SAN or UCI. Enigmata used a fixed pool; here positions are
built: a king pushed to the edge (usually), an attacking king nearby, one or two heavy pieces
and random extra material, kept only when python-chess calls the position legal and finds at
least one mating move (and, for harder presets, some checks that do NOT mate, as decoys).
Colours are mirrored half the time. The verifier replays the move with python-chess: any legal
move that checkmates scores 1. About a third of the candidates qualify: ~5 / 9 / 23 ms per
easy / medium / hard item on an idle core (hard also demands two decoy checks).
"""

from __future__ import annotations

import random

import chess

from datamodules.enigmata.base import Task, register
from lit_reason.tasks.answer import extract_answer

MAX_MOVE_CHARS = 12
EXTRA_PIECES = (chess.PAWN, chess.PAWN, chess.KNIGHT, chess.BISHOP, chess.ROOK)


def parse_move(board: chess.Board, text: str) -> chess.Move | None:
    """A legal move from SAN (``Qh7#``) or UCI (``h5h7``) text, else None; never raises."""
    text = text.strip()
    if not text or len(text) > MAX_MOVE_CHARS or not text.isascii():
        return None
    try:
        move = board.parse_san(text)
        return move if move and move in board.legal_moves else None  # parse_san allows null moves
    except ValueError:
        pass
    try:
        move = chess.Move.from_uci(text.lower())
    except ValueError:
        return None
    return move if move in board.legal_moves else None


def mating_moves(board: chess.Board) -> list[chess.Move]:
    """All legal moves of the side to move that checkmate (only checking moves are tried)."""
    mates = []
    for move in board.legal_moves:
        if board.gives_check(move):
            board.push(move)
            if board.is_checkmate():
                mates.append(move)
            board.pop()
    return mates


def _place(rng: random.Random, board: chess.Board, squares, piece: chess.Piece, target: int) -> None:
    """Put ``piece`` on a random empty square of ``squares`` where a pawn is not on a back rank
    and a white piece does not already attack the black king (``target``): such positions are
    illegal with white to move. Gives up silently after a few tries (the filter catches it)."""
    for _ in range(12):
        sq = rng.choice(squares)
        if board.piece_type_at(sq) is not None:
            continue
        if piece.piece_type == chess.PAWN and chess.square_rank(sq) in (0, 7):
            continue
        board.set_piece_at(sq, piece)
        if piece.color == chess.WHITE and board.is_attacked_by(chess.WHITE, target):
            board.remove_piece_at(sq)
            continue
        return


def _candidate(rng: random.Random, attack_extras: int, defence_extras: int) -> chess.Board:
    """A random position, white to move, built around one of three mating set-ups against the
    black king: a back-rank king behind its own pawns, a king on the edge facing the white king
    (opposition), or a loose random placement near the edge."""
    board = chess.Board(None)
    pattern = rng.randrange(3)
    white, black = chess.WHITE, chess.BLACK
    if pattern == 0:  # back rank: pawns in front of the king
        king = chess.square(rng.randrange(8), 7)
        board.set_piece_at(king, chess.Piece(chess.KING, black))
        front = [chess.square(f, 6) for f in range(8) if abs(f - chess.square_file(king)) <= 1]
        for sq in rng.sample(front, rng.randint(len(front) - 1, len(front))):
            board.set_piece_at(sq, chess.Piece(chess.PAWN, black))
        _place(rng, board, [sq for sq in chess.SQUARES if chess.square_rank(sq) <= 4], chess.Piece(chess.KING, white), king)
    elif pattern == 1:  # opposition: white king two squares in front of the edge king
        file = rng.randrange(8)
        king = chess.square(file, 7)
        board.set_piece_at(king, chess.Piece(chess.KING, black))
        board.set_piece_at(chess.square(min(7, max(0, file + rng.randint(-1, 1))), 5), chess.Piece(chess.KING, white))
    else:
        edge = [sq for sq in chess.SQUARES if chess.square_rank(sq) in (0, 7) or chess.square_file(sq) in (0, 7)]
        king = rng.choice(edge) if rng.random() < 0.8 else rng.choice(chess.SQUARES)
        board.set_piece_at(king, chess.Piece(chess.KING, black))
        near = [sq for sq in chess.SQUARES if 2 <= chess.square_distance(sq, king) <= 3]
        _place(rng, board, near, chess.Piece(chess.KING, white), king)
    heavy = rng.choice([[chess.QUEEN], [chess.ROOK], [chess.QUEEN, chess.ROOK], [chess.ROOK, chess.ROOK]])
    for piece in heavy:
        _place(rng, board, chess.SQUARES, chess.Piece(piece, white), king)
    shield = [sq for sq in chess.SQUARES if chess.square_distance(sq, king) == 1]
    for _ in range(defence_extras):
        piece = rng.choice(EXTRA_PIECES)
        _place(rng, board, shield if piece == chess.PAWN else chess.SQUARES, chess.Piece(piece, black), king)
    for _ in range(attack_extras):
        _place(rng, board, chess.SQUARES, chess.Piece(rng.choice(EXTRA_PIECES), white), king)
    if rng.random() < 0.5:
        board = board.transform(chess.flip_horizontal)
    board.turn = white
    return board


@register
class CheckmateInOne(Task):
    name = "checkmate_in_one"
    category = "Search"
    presets = {
        "easy": {"attack_extras": 0, "defence_extras": 1, "min_decoy_checks": 0},
        "medium": {"attack_extras": 1, "defence_extras": 3, "min_decoy_checks": 1},
        "hard": {"attack_extras": 3, "defence_extras": 5, "min_decoy_checks": 2},
    }
    test_knobs = [{"attack_extras": 0, "defence_extras": 0, "min_decoy_checks": 0}, {"attack_extras": 5, "defence_extras": 6}]

    def build(self, rng, attack_extras, defence_extras, min_decoy_checks):
        for _ in range(20_000):
            board = _candidate(rng, attack_extras, defence_extras)
            if not board.is_valid() or board.is_game_over():
                continue
            mates = mating_moves(board)
            if not mates:
                continue
            checks = sum(board.gives_check(m) for m in board.legal_moves)
            if checks - len(mates) >= min_decoy_checks:
                break
        else:
            raise ValueError(f"checkmate_in_one: no position found with {min_decoy_checks} non-mating checks; lower min_decoy_checks")
        if rng.random() < 0.5:
            board = board.mirror()
            mates = [chess.Move(chess.square_mirror(m.from_square), chess.square_mirror(m.to_square), m.promotion) for m in mates]
        side = "White" if board.turn == chess.WHITE else "Black"
        diagram = "\n".join(f"{8 - i} {line}" for i, line in enumerate(str(board).splitlines())) + "\n  a b c d e f g h"
        question = (
            f"Chess position (FEN): {board.fen()}\n{diagram}\n"
            "(Uppercase letters are White pieces, lowercase Black: K king, Q queen, R rook, B bishop, N knight, P pawn.)\n\n"
            f"{side} to move has a checkmate in one move. Give one mating move in standard algebraic notation "
            "(for example Qh7#) or UCI notation (for example d1h5). Any move that checkmates is accepted."
        )
        return question, board.san(mates[0]), {"fen": board.fen()}

    def verify(self, answer, metadata):
        board = chess.Board(metadata["fen"])
        move = parse_move(board, answer)
        if move is None:
            return False
        board.push(move)
        return board.is_checkmate()

    def corruptions(self, puzzle, rng):
        board = chess.Board(puzzle.metadata["fen"])
        gold = parse_move(board, extract_answer(puzzle.answer))
        mates = set(mating_moves(board))
        quiet = [m for m in board.legal_moves if m not in mates]
        out = ["e9e10", "Kxz9", gold.uci()[:2], extract_answer(puzzle.answer) + " " + extract_answer(puzzle.answer)]
        if quiet:
            out.append(board.san(rng.choice(quiet)))
        illegal = [
            chess.Move(sq, to).uci()
            for sq in chess.SQUARES
            if board.color_at(sq) == board.turn
            for to in chess.SQUARES
            if chess.Move(sq, to) not in board.legal_moves and sq != to
        ]
        out.append(rng.choice(illegal))
        return out
