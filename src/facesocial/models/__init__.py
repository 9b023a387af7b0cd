"""Model catalog, store and runtime."""
