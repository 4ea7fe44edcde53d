"""Exceptions raised by oodlens. All derive from :class:`OODLensError` so the CLI can print them as one line."""


class OODLensError(ValueError):
    """A problem with the user's input or configuration, explained in the message."""


class NotFittedError(OODLensError, RuntimeError):
    """A detector (or calibrator) was used before ``fit``."""


class MissingFeatureError(OODLensError, KeyError):
    """A feature name that a detector needs is not in the :class:`~oodlens.features.Features`."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
