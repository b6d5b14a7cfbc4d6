"""Async DNS resolution (MX, A/AAAA, TXT, PTR, TLSA) with configurable nameservers. (Grows with relaying.)"""
