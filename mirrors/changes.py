"""Something changed: the one call a domain service makes, inside its transaction.

Two copies of our state live elsewhere, and each decides what a change means for it:
- the gateway's (mirrors/gateway.py): the changed snapshot is published to Redis after commit,
  so a change the transaction rolls back is never published;
- LiteLLM's (mirrors/litellm.py, only when the integration is on): the object's sync record
  is marked behind in the same transaction, and its push is queued after commit.
A service calls one of these once per changed aggregate, when its write changed something.
"""

from collections.abc import Iterable

from django.db import transaction

from mirrors import gateway, litellm


def team_changed(team) -> None:
    """A team's settings, status, limits or model groups changed."""
    team_pk = team.pk
    transaction.on_commit(lambda: gateway.publish_team(team_pk))
    litellm.team_changed(team)


def team_removed(team) -> None:
    """A team is being deleted (call before deleting it): both copies forget it."""
    team_pk = team.pk  # gone from the instance once deleted
    transaction.on_commit(lambda: gateway.unpublish_team(team_pk))
    litellm.team_changed(team)


def key_changed(key, *, secret: str | None = None, retired: Iterable[str] = ()) -> None:
    """A key changed. `secret`: its new plaintext (create, rotate), which LiteLLM must be
    given once; `retired`: hashes of secrets that stopped working, which the gateway drops."""
    key_pk, retired = key.pk, list(retired)
    transaction.on_commit(lambda: gateway.publish_key(key_pk, retired_hashes=retired))
    litellm.key_changed(key, secret=secret)


def key_retired(key) -> None:
    """A revoked or expired key's grace is over: the gateway forgets it (its snapshots under
    every hash, and its key account once nothing is in flight or unsettled for it)."""
    key_pk, hashes = key.pk, [key.key_hash, key.previous_key_hash]
    transaction.on_commit(lambda: gateway.unpublish_key(key_pk, hashes))


def retired_key_accounts_due() -> None:
    """Not a change: the periodic retry for retired keys whose account was still busy."""
    gateway.drop_retired_key_accounts()


def catalog_changed() -> None:
    """An upstream, model or model group was created, changed or deleted."""
    transaction.on_commit(gateway.publish_catalog)
    litellm.catalog_changed()


def health_changed(model_pks: Iterable[int]) -> None:
    """Models got new health verdicts (the gateway routes around a model that is down)."""
    model_pks = list(model_pks)
    transaction.on_commit(lambda: gateway.publish_health(model_pks))


def account_moved(account, *, by_usage: bool = False) -> None:
    """A team's credits moved: its balance, period spend or version.

    The gateway's copy of the settled account is moved forward after commit, always.
    LiteLLM's budget follows the credits by one rule: a credit movement posted to the ledger
    (a grant, an adjustment, and a budget period's reset, expiry and allowance) pushes it at
    once, wherever it is posted from, so credits given are usable there at once; usage
    (`by_usage`), which moves a busy team's balance with every settlement, is followed by
    litellm_sync.push.budgets_refresh at most every LITELLM_BUDGET_REFRESH_SECONDS."""
    transaction.on_commit(lambda: gateway.publish_account(account))
    litellm.account_moved(account, by_usage=by_usage)
