"""The Data step's widgets: one a tab (file, convert, split, tokens, self-cognition) and their parts."""
