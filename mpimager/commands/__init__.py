"""The commands of the `mpimager` CLI, one module each (add_arguments + run)."""
