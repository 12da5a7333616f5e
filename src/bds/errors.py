"""One exception type for bad user input: the CLI prints its message and exits with 2."""


class BDSInputError(Exception):
    """Bad input (file, field, value). The message is one sentence that says where and what to do."""


class ConfigError(BDSInputError):
    """A configuration file or value is invalid."""
