"""Sweeps: a sweep file checked into a plan, its trials in the queue, ASHA and search methods."""
