"""Talking to a recognition service: profiles, protocol, client, transport, the key."""
