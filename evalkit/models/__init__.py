"""Local models evalkit builds or converts for tests and the demo (no hub downloads)."""
