"""Enigmata Grid tasks (10): each lives in its own ``grid_*.py`` module; importing them here
registers them (see base.py for the schema and grid_common.py for the shared answer format)."""

from datamodules.enigmata import grid_sudoku  # noqa: F401
from datamodules.enigmata import grid_binario, grid_campsite  # noqa: F401
from datamodules.enigmata import grid_magic_square  # noqa: F401
from datamodules.enigmata import grid_skyscraper  # noqa: F401
from datamodules.enigmata import grid_star_battle  # noqa: F401
from datamodules.enigmata import grid_crosswords  # noqa: F401
from datamodules.enigmata import grid_symbolic  # noqa: F401
