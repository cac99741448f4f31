"""The pieces of `make run` (scripts/run_local.py): environment, supervisor, status line."""
