"""The gateway: users and tokens, role checks, and the one public door to every service."""
