"""Backbone, FPN, heads and the RetinaMask model; ``factory`` builds them from a config."""
