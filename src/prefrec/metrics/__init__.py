"""Ranking metrics (pure functions; definitions in the docstrings). Import-light: no torch here."""
