"""The widget-device-plugin supervisor: config, lifecycle, watching, metrics and CLI."""

__version__ = "0.1.0"
