"""bcrypt's work per log-in attempt, observed without a clock: every hash `checkpw` is given is
recorded, and its cost (work 2^cost) summed. An unknown email, an account at BCRYPT_ROUNDS and an
account hashed at an older, lower cost must all cost exactly one check at BCRYPT_ROUNDS.
"""

from __future__ import annotations

import bcrypt
import pytest

from app.auth.security import PasswordHasher, bcrypt_cost

ROUNDS = 6
PASSWORD = b"correct horse battery"


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The cost of every hash bcrypt.checkpw is asked to check."""
    costs: list[int] = []
    real = bcrypt.checkpw

    def recording(password: bytes, hashed: bytes) -> bool:
        cost = bcrypt_cost(hashed)
        assert cost is not None
        costs.append(cost)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", recording)
    return costs


def work(costs: list[int]) -> int:
    return sum(2**cost for cost in costs)


def hashed_at(cost: int, password: bytes = PASSWORD) -> str:
    return bcrypt.hashpw(password, bcrypt.gensalt(cost)).decode()


async def test_an_unknown_email_costs_one_check_at_the_configured_cost(
    checked: list[int],
) -> None:
    assert not await PasswordHasher(ROUNDS).verify(PASSWORD, None)
    assert checked == [ROUNDS]


@pytest.mark.parametrize("stored_cost", [4, 5, ROUNDS])
@pytest.mark.parametrize("right", [True, False], ids=["right-password", "wrong-password"])
async def test_every_account_costs_what_one_at_the_configured_cost_does(
    checked: list[int], stored_cost: int, right: bool
) -> None:
    stored = hashed_at(stored_cost)
    password = PASSWORD if right else b"wrong password"
    assert await PasswordHasher(ROUNDS).verify(password, stored) is right
    assert checked[0] == stored_cost  # the account's own hash first
    assert work(checked) == 2**ROUNDS


async def test_a_hash_that_is_not_bcrypt_never_matches_and_costs_the_same(
    checked: list[int],
) -> None:
    assert not await PasswordHasher(ROUNDS).verify(PASSWORD, "not-a-bcrypt-hash")
    assert work(checked) == 2**ROUNDS


async def test_a_higher_stored_cost_is_checked_as_is(checked: list[int]) -> None:
    assert await PasswordHasher(5).verify(PASSWORD, hashed_at(ROUNDS))
    assert checked == [ROUNDS]


def test_needs_rehash_when_the_cost_differs() -> None:
    hasher = PasswordHasher(ROUNDS)
    assert not hasher.needs_rehash(hashed_at(ROUNDS))
    assert hasher.needs_rehash(hashed_at(4))
    assert hasher.needs_rehash(hashed_at(ROUNDS + 1))
