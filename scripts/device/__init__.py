"""Scripts copied to a lent GPU machine (`scripts/device/README.md`), run there as files."""
