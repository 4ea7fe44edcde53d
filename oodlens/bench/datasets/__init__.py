"""Built-in data sets that need no download (they ship with scikit-learn)."""
