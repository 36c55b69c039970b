"""Enigmata tasks of this category (see base.py for the schema)."""
