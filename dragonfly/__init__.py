"""Dragonfly: a bare-metal provisioning appliance in one file."""

__version__ = "0.1.0"
