"""The agent API needs an agent token and only ever acts within that token's deployment."""

from __future__ import annotations

from controlplane_testkit import CLAIM, EVENTS, Api
from tether.controlplane import auth
from tether.shared.errors import UNAUTHENTICATED

CLAIM_VARS = {
    "agentId": "a",
    "substrates": ["process"],
    "max": 10,
    "waitMs": 0,
    "leaseSeconds": 30.0,
}


async def test_agent_mutations_refuse_missing_and_bad_tokens(api: Api) -> None:
    for token in (None, "not-a-token"):
        body = await api.post(CLAIM, token=token, **CLAIM_VARS)
        (error,) = body["errors"]
        assert error["extensions"]["code"] == UNAUTHENTICATED
        assert "token" in error["message"]
        assert "Traceback" not in str(body)
        body = await api.post(EVENTS, token=token, items=[])
        assert body["errors"][0]["extensions"]["code"] == UNAUTHENTICATED
    # The refused claims changed nothing: the startup load is still there to claim.
    assert [i.kind for i in await api.claim()] == ["load_location"]


async def test_a_user_token_is_not_an_agent_token(api: Api) -> None:
    async with api.cp.db.transaction() as session:
        user_token = await auth.create_token(session, name="ui", role=auth.Role.USER)
    body = await api.post(CLAIM, token=user_token, **CLAIM_VARS)
    assert "needs an agent token" in body["errors"][0]["message"]


async def test_agents_see_only_their_deployments_work(api: Api) -> None:
    async with api.cp.db.transaction() as session:
        other = await auth.create_token(
            session, name="other", role=auth.Role.AGENT, deployment_id="other"
        )
    body = await api.post(CLAIM, token=other, **CLAIM_VARS)
    assert body["data"]["claimWork"] == []
    assert len(await api.claim()) == 1


async def test_only_the_hash_of_a_token_is_stored(api: Api) -> None:
    from sqlalchemy import select
    from tether.controlplane.db.models import ApiToken

    async with api.cp.db.reading() as session:
        hashes = (await session.execute(select(ApiToken.token_hash))).scalars().all()
    assert hashes == [auth.hash_token(api.token)]
    assert api.token not in hashes
