"""Tables and figures built from ``metrics.json`` files (torch-free)."""
