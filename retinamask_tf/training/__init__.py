"""Training: schedule, optimizer, the checkpointed training loop."""
