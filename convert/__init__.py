"""Workstation tooling: rebuild, train and quantise maskdoor's models (needs the [convert] extra)."""
