"""Data: the embedded synthetic dataset and ImageNet metadata helpers."""
