"""Operating the appliance from the command line: install, uninstall, status, and the
Tinkerbell cluster check."""
