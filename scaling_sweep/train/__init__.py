"""The trainer: models, datasets, training loop, pruning masks and the IMP driver (torch only, no sweep code)."""
