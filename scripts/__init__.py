"""Maintenance and device-run scripts (run as files; a package only for the import contracts)."""
