"""The language-server bridge (pygls) — built in its own issue."""
