"""Talking to a recognition service: profiles, protocol, errors, text, client, transport,
the key."""
