"""Image handling and one module per model family."""
