"""The data error type, shared by the readers."""


class DatasetError(ValueError):
    """The dataset cannot be used; the message names the file and the ids involved."""
