"""Who cloudctl acts as. Every resource records this owner (DESIGN.md, "Resources").

For now cloudctl always acts as the cloud administrator; credentials that name another
account/user replace `current_owner` later without reshaping the data.
"""

from __future__ import annotations

from typing import NamedTuple


class Owner(NamedTuple):
    account: str
    user: str


ADMIN = Owner(account="admin", user="admin")


def current_owner() -> Owner:
    """The account and user the running cloudctl acts as (the admin until credentials exist)."""
    return ADMIN
