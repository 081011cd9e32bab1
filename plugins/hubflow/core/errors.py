"""The one base class of every error hubflow means people to read (the CLI prints these without a traceback)."""


class HubflowError(Exception):
    """A problem with input, configuration or the outside world, stated for the operator."""
