"""Accounts at the service level: the importer's namespace."""

from __future__ import annotations

import pytest

from core.errors import InvalidInput
from core.services import users


async def test_no_account_is_made_in_the_importers_namespace(odm):
    with pytest.raises(InvalidInput):
        await users.create_user(
            username="movielens-5", email="a@example.com", display_name="A", password="x" * 12
        )
    assert await odm.users.count_documents({}) == 0
