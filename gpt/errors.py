"""Errors a user can fix: the CLI prints them as one line (exit code 2), the UI as a message."""


class UserInputError(ValueError):
    """Bad input (arguments, files, configs, checkpoints). The message says what is wrong and how to fix it."""


class CheckpointError(UserInputError):
    """A checkpoint directory or archive that is missing, corrupt, hostile or not one of ours."""
