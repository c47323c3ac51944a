"""Collaborative-filtering pieces: user-item CSR, splits, negative samplers, full-ranking evaluation.

Import-light: submodules import torch/numpy only when used.
"""
