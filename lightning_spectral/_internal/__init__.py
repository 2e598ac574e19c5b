"""Internal helpers shared by the layers (pure torch; no Lightning import). Not public API: names here may
change without notice.
"""
