"""The command line on top of the pipeline: `main` parses and turns errors into exit codes; one module per command."""
