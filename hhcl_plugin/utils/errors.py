"""Errors caused by what the user gave us (config, data, weights).

The launcher prints these as one line and exits non-zero, without a traceback:
they describe a problem the user can fix, not a bug in the plugin.
"""


class UserError(Exception):
    """A problem with the user's input; the message says what is wrong and how to fix it."""


class ConfigError(UserError):
    pass


class DatasetError(UserError):
    pass


class WeightsError(UserError):
    pass


class ClusteringError(UserError):
    pass


class OutputPathError(UserError):
    """A path the program creates or writes cannot be written (the OS's reason named); nothing earlier is lost."""


class TrainingError(UserError):
    """Training cannot go on (e.g. a non-finite loss); checkpoints already written stay valid."""


class RegistryError(UserError, KeyError):
    """An unknown name in a registry (a KeyError too, for code that expects one)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
