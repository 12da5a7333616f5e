"""One exception type for bad user input: the CLI prints its message and exits with 2."""


class BDSInputError(Exception):
    """Bad input (file, field, value). The message is one sentence that says where and what to do."""


class ConfigError(BDSInputError):
    """A configuration file or value is invalid."""


class FieldError(ValueError):
    """Raised by a config section's validate(): `key` is the offending field in that section.

    The config loader turns it into a ConfigError that names the file, line and full key.
    """

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


class Interrupted(Exception):
    """Ctrl-C during long work: the message says where it stopped and how to resume (exit 130)."""
