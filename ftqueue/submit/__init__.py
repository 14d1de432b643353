"""Submitting jobs: check specs, write the rows, commit, then publish their ids."""
