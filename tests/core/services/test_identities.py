"""Finding or creating the user behind a third-party identity (service level)."""

from __future__ import annotations

import pytest

from core import names
from core.errors import Conflict
from core.services import identities
from core.services.identities import identities_of, link_identity, login_with_identity
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
    linked = await link_identity(provider="idp", subject="x", user_id=owner.id)
    assert linked.user_id == owner.id
    assert (await link_identity(provider="idp", subject="x", user_id=owner.id)).id == linked.id
    with pytest.raises(Conflict):
        await link_identity(provider="idp", subject="x", user_id=other.id)
    found, created = await login_with_identity(provider="idp", claims={"sub": "x"})
    assert found.id == owner.id and not created
    assert [i.provider for i in await identities_of(user_id=owner.id)] == ["idp"]


async def test_provider_sign_ups_stay_out_of_the_importers_namespace(odm, monkeypatch):
    claims = {"sub": "m1", "preferred_username": "movielens-42", "name": "M"}
    user, created = await login_with_identity(provider="idp", claims=claims)
    assert created and user.username.startswith("movielens-42-")
    assert not names.is_reserved(user.username)
    # A taken "movielens" gets a numbered twin, which must not be movielens-<digits> either.
    await User(username="movielens", display_name="first").insert()
    monkeypatch.setattr(identities.secrets, "randbelow", lambda n: 123)
    twin, _ = await login_with_identity(provider="idp", claims={"sub": "m2", "name": "movielens"})
    assert not names.is_reserved(twin.username)
