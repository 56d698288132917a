"""Helpers that `keras_attention`, `zoo` and `serving` share.

Standard library only, so each package may import it without importing another one
(`serving` imports neither `keras_attention` nor `zoo`).
"""
