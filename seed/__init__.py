"""Data loading: the shipped sample catalogue (and, later, MovieLens imports)."""
