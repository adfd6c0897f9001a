"""iPXE scripts and the boot loaders manifest (package data)."""
