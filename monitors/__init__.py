"""Static-analysis monitors (jedi, tree-sitter, live SQLite) — built in their own issue."""
