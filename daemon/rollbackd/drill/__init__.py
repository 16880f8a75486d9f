"""drill (filled by its capability)."""
