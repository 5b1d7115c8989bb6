"""The error every configuration check raises, below both the configuration and the
registries it asks (imgprep.formats), so that neither imports the other to raise it."""


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key."""
