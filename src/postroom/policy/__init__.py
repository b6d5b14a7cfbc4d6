"""Decisions: who may connect, send, relay; rate limits; DNSBL; SPF/DKIM/DMARC (grows with policy)."""
