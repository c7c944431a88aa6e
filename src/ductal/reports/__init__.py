"""Figures, tables and rendered reports."""
