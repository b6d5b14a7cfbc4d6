"""The postroom command and its subcommands."""
