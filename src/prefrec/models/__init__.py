"""Backbones. Import-light: ``from prefrec.models.mf import MF`` pulls torch only then."""
