"""Report stage: compare.py turns manifests into report data; render.py formats it (json, md)."""
