"""Data layer: readers, the Interactions/ItemCatalog representation, splits and samples."""

from prefrec.data.interactions import Dataset, Interactions, ItemCatalog

__all__ = ["Dataset", "Interactions", "ItemCatalog"]
