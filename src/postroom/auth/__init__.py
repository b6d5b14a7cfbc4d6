"""Accounts (mailboxes, aliases), password hashes, and, later, SASL and login throttling."""
