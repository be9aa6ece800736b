"""Losses: sigmoid focal loss, (self-adjusting) smooth L1."""
