"""Errors raised on bad input, each carrying one message that names what is wrong."""


class SpecError(ValueError):
    """A spec, preset name or override is inconsistent or unknown."""


class WeightsError(ValueError):
    """Canonical weights do not fit a spec: every problem is listed in one message."""


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, truncated, or not what it claims to be."""


class DataError(CheckpointError):
    """A data set file is missing, truncated or holds impossible values (a kind of bad
    file, so whatever reports CheckpointError reports it too)."""
