"""Converters from reference implementations' checkpoints (numpy only, no torch at run time)."""
