"""What a job reads: tables of text, model weights, hub ids, pinned at submit (torch-free)."""
