"""Layers and regularizers that torch does not ship as such."""
