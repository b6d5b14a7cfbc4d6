"""asyncio listeners and the per-connection session that drives the SMTP protocol."""
