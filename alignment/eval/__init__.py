"""Evaluation: win rate against the reference under a reward, KL, length, best/worst-of-N."""
