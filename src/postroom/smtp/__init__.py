"""SMTP as a pure state machine: bytes in, events and replies out. No sockets, no clock, no disk."""
