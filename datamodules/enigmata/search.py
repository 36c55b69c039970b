"""Enigmata Search tasks (see base.py for the schema); one module per puzzle registers each task."""

from datamodules.enigmata import (  # noqa: F401  (importing registers the tasks)
    search_chess,
    search_hitori,
    search_kakurasu,
    search_light_up,
    search_minesweeper,
    search_slant,
    search_tic_tac_toe,
)
