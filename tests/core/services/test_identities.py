"""Finding or creating the user behind a third-party identity (service level)."""

from __future__ import annotations

import pytest

from core.errors import Conflict
from core.services.identities import login_with_identity
from models import User


async def test_verified_email_is_kept_and_never_links_another_account(odm):
    claims = {"sub": "a1", "email": "Ann@Example.org", "email_verified": True, "name": "Ann"}
    ann, created = await login_with_identity(provider="idp", claims=claims)
    assert created and ann.email == "ann@example.org" and ann.username == "ann"
    again, created = await login_with_identity(provider="idp", claims=claims)
    assert not created and again.id == ann.id

    # Another subject claiming the same verified address: a new account, no email copied.
    twin, created = await login_with_identity(provider="idp", claims={**claims, "sub": "a2"})
    assert created and twin.id != ann.id and twin.email is None
    assert twin.username.startswith("ann-")  # the name was taken: a suffix makes it unique

    unverified = {"sub": "b1", "email": "bob@example.org", "email_verified": False}
    bob, _ = await login_with_identity(provider="idp", claims=unverified)
    assert bob.email is None and bob.username == "bob"


async def test_linking_to_a_user_and_refusing_a_taken_identity(odm):
    owner = User(username="owner", display_name="Owner")
    await owner.insert()
    other = User(username="other", display_name="Other")
    await other.insert()
    linked, created = await login_with_identity(
        provider="idp", claims={"sub": "x"}, link_user=str(owner.id)
    )
    assert linked.id == owner.id and not created
    with pytest.raises(Conflict):
        await login_with_identity(provider="idp", claims={"sub": "x"}, link_user=str(other.id))
    found, _ = await login_with_identity(provider="idp", claims={"sub": "x"})
    assert found.id == owner.id
