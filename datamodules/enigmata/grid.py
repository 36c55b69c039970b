"""Enigmata Grid tasks (10): each lives in its own ``grid_*.py`` module; importing them here
registers them (see base.py for the schema and grid_common.py for the shared answer format)."""

from datamodules.enigmata import (  # noqa: F401  (register tasks)
    grid_binario,
    grid_campsite,
    grid_crosswords,
    grid_magic_square,
    grid_skyscraper,
    grid_star_battle,
    grid_sudoku,
    grid_symbolic,
)
