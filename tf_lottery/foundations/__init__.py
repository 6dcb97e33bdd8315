"""Foundations: errors, argument checks, atomic files, checksums and Ctrl-C handling.

Everything above builds on these; they import nothing of tf_lottery's but each other.
"""
