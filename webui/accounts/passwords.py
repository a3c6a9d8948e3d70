"""One-time passwords printed once to whoever creates an account from the shell."""

from __future__ import annotations

import secrets

# Letters and digits that cannot be mistaken for one another when read off a terminal.
ALPHABET = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def one_time_password(length: int = 20) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))
