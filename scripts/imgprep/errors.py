"""The configuration error, apart from ``imgprep.config``: the source and format modules
raise it from their checks, and ``config`` imports their registries, so it cannot live there
without an import cycle."""


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key."""
