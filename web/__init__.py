"""Templates and static assets of the panel (package data)."""
