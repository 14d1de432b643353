"""The leaf layer: job states, progress and outcomes, text for people, atomic files."""
