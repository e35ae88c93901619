"""The headless `tunedeck` command line: one module per command group, no textual."""
