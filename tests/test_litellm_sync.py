"""Teams and keys mirrored into LiteLLM (the contract fake): whole-object pushes after commit,
retries while LiteLLM is down, idempotent deliveries, drift repair, secrets wiped once used."""

from datetime import timedelta

import pytest
from django.utils import timezone

from billing import resets
from billing.services import credits_grant
from core.secrets import encrypt, hash_secret
from litellm_sync import push as sync
from litellm_sync import tasks
from litellm_sync.models import KeySync, TeamSync
from modelgroups import services as catalog
from orgs.services import organization_create
from teams import services as teams
from teams.models import Team, VirtualKey
from tests.helpers.tenants import settle_usage
from tests.helpers.threads import race

WRITES = {"/team/new", "/team/update", "/key/generate", "/key/update", "/key/delete"}


@pytest.fixture
def lite(litellm, db):
    """A LiteLLM upstream serving `fake-gpt` (group `lite`), an OpenAI one (group `direct`)."""
    up = catalog.upstream_create(actor="test", name="litellm", kind="litellm", base_url=litellm.url)
    other = catalog.upstream_create(actor="test", name="oai", base_url="http://127.0.0.1:9/v1")
    fake_gpt = catalog.model_create(
        actor="test", name="gpt-mini", upstream=up, upstream_model="fake-gpt"
    )
    direct = catalog.model_create(actor="test", name="direct-m", upstream=other, upstream_model="x")
    return {
        "upstream": up,
        "model": fake_gpt,
        "lite": catalog.model_group_create(
            actor="test", name="lite", members=[{"model": fake_gpt}]
        ),
        "direct": catalog.model_group_create(
            actor="test", name="direct", members=[{"model": direct}]
        ),
    }


@pytest.fixture
def commit(django_capture_on_commit_callbacks):
    """Run a block and its after-commit work (the pushes; Celery runs eagerly in tests)."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def org(db):
    return organization_create(actor="test", name="Acme")[0]


def make_team(commit, org, groups, **fields):
    with commit():
        return teams.team_create(
            actor="test", organization=org, name=fields.pop("name", "T"), model_groups=groups,
            **fields,
        )  # fmt: skip


def make_key(commit, team, **fields):
    with commit():
        return teams.key_create(actor="test", team=team, name=fields.pop("name", "k"), **fields)


def writes(fake) -> list[tuple[str, str]]:
    return [c for c in fake.calls if c[1] in WRITES]


def test_a_team_and_its_key_reach_litellm_with_the_same_secret(litellm, lite, org, commit, api):
    # given
    team = make_team(commit, org, [lite["lite"], lite["direct"]], rpm_limit=60, tpm_limit=1000)
    # when
    key, secret = make_key(commit, team, rpm_limit=5)
    # then: the team, with our org in metadata and only LiteLLM's models
    mirrored = litellm.teams[team.public_id]
    assert mirrored["models"] == ["fake-gpt"]
    assert mirrored["metadata"]["tollgate_org"] == org.public_id
    assert (mirrored["rpm_limit"], mirrored["tpm_limit"], mirrored["blocked"]) == (60, 1000, False)
    # and the key, under the hash of the very secret the customer holds
    copy = litellm.key(secret)
    assert copy["token"] == key.key_hash == hash_secret(secret)
    assert (copy["team_id"], copy["models"], copy["rpm_limit"]) == (team.public_id, [], 5)
    assert copy["key_alias"] == f"{key.public_id}.{key.key_hash[:8]}"
    # and the secret is no longer held once LiteLLM has it
    record = KeySync.objects.get(key=key)
    assert record.secrets_encrypted == {}
    assert record.litellm_hashes == [key.key_hash]
    # and the admin API shows both synced
    for path in (f"/api/teams/{team.public_id}/", f"/api/keys/{key.public_id}/"):
        state = api.get(path).json()["litellm_sync"]
        assert state["state"] == "synced" and state["error"] == "" and state["synced_at"]


def test_nothing_is_recorded_or_sent_while_the_integration_is_off(
    litellm, lite, org, commit, settings, api
):
    # given
    settings.LITELLM_BASE_URL = ""
    # when
    team = make_team(commit, org, [lite["lite"]])
    key, _ = make_key(commit, team)
    with commit():
        teams.key_revoke(actor="test", key=key)
    # then
    assert litellm.calls == []
    assert not TeamSync.objects.exists() and not KeySync.objects.exists()
    assert api.get(f"/api/teams/{team.public_id}/").json()["litellm_sync"] is None


def test_changes_made_while_litellm_is_down_queue_and_apply_latest_first_when_it_returns(
    litellm, lite, org, commit, api
):
    # given: a synced team with a key
    team = make_team(commit, org, [lite["lite"]])
    old_key, old_secret = make_key(commit, team, name="old")
    # when: LiteLLM goes away while the team is limited, then suspended, a key is minted and
    # the old one revoked
    litellm.stop()
    with commit():
        teams.team_update(actor="test", team=team, data={"rpm_limit": 7})
    with commit():
        teams.team_set_status(actor="test", team=team, status=Team.Status.SUSPENDED)
    new_key, new_secret = make_key(commit, team, name="new")
    with commit():
        teams.key_revoke(actor="test", key=old_key)
    # then: every object says it failed, why, and when it is retried
    state = api.get(f"/api/keys/{new_key.public_id}/").json()["litellm_sync"]
    assert state["state"] == "failed"
    assert "failed" in state["error"] or "timed out" in state["error"]
    assert state["next_retry_at"] is not None and state["attempts"] >= 1
    assert api.get(f"/api/teams/{team.public_id}/").json()["litellm_sync"]["state"] == "failed"
    # and the new secret waits encrypted, never in plaintext
    held = KeySync.objects.get(key=new_key).secrets_encrypted
    assert list(held) == [new_key.key_hash] and new_secret not in str(held)
    # when: LiteLLM is back and the retries come due
    litellm.start()
    assert sync.sync_due()["teams"] == {}  # backoff not over yet: nothing pushed
    TeamSync.objects.update(next_retry_at=timezone.now())
    KeySync.objects.update(next_retry_at=timezone.now())
    sync.sync_due()
    # then: LiteLLM has the latest state of everything
    mirrored = litellm.teams[team.public_id]
    assert (mirrored["rpm_limit"], mirrored["blocked"]) == (7, True)
    assert litellm.key(new_secret)["status"] == "active"
    assert litellm.key(old_secret)["status"] == "deleted"
    assert {s.state for s in [*TeamSync.objects.all(), *KeySync.objects.all()]} == {"synced"}
    assert KeySync.objects.get(key=new_key).secrets_encrypted == {}


def test_a_duplicate_delivery_changes_nothing(litellm, lite, org, commit):
    # given
    team = make_team(commit, org, [lite["lite"]])
    key, secret = make_key(commit, team)
    record = KeySync.objects.get(key=key)
    before = (dict(litellm.key(secret)), len(writes(litellm)), record.synced_version)
    # when: the same task is delivered again, twice
    tasks.push_key(record.pk)
    tasks.push_team(TeamSync.objects.get(team=team).pk)
    tasks.push_key(record.pk)
    # then
    record.refresh_from_db()
    assert (dict(litellm.key(secret)), len(writes(litellm)), record.synced_version) == before


def test_a_mint_whose_answer_was_lost_is_retried_without_a_second_key(litellm, lite, org, commit):
    # given: LiteLLM creates the key but answers too late for us
    team = make_team(commit, org, [lite["lite"]])
    litellm.fail_next(None, "late")  # /key/info answers; /key/generate acts, answers too late
    key, secret = make_key(commit, team)
    record = KeySync.objects.get(key=key)
    assert record.state == "failed"
    assert [k["key_alias"] for k in litellm.live_keys().values()] == [
        f"{key.public_id}.{key.key_hash[:8]}"
    ]
    # when: the retry finds the alias taken by that same key
    sync.key_push(record.pk, force=True)
    # then: adopted, not duplicated
    record.refresh_from_db()
    assert record.state == "synced" and record.secrets_encrypted == {}
    assert len(litellm.live_keys()) == 1 and litellm.key(secret)["status"] == "active"


def test_rotation_keeps_the_old_secret_in_litellm_until_its_grace_ends(litellm, lite, org, commit):
    # given
    team = make_team(commit, org, [lite["lite"]])
    key, first = make_key(commit, team)
    # when
    with commit():
        key, second = teams.key_rotate(actor="test", key=key, grace_seconds=600)
    # then: both secrets work in LiteLLM, the old one expiring with the grace period
    assert litellm.key(first)["status"] == litellm.key(second)["status"] == "active"
    assert litellm.key(first)["expires"] is not None
    assert litellm.key(second)["expires"] is None
    # when: the grace period ends
    with commit():
        teams.key_grace_periods_end_due(now=timezone.now() + timedelta(hours=1))
    # then
    assert litellm.key(first)["status"] == "deleted"
    assert litellm.key(second)["status"] == "active"
    assert KeySync.objects.get(key=key).litellm_hashes == [hash_secret(second)]


def test_rotation_without_grace_replaces_the_secret_at_once(litellm, lite, org, commit):
    team = make_team(commit, org, [lite["lite"]])
    key, first = make_key(commit, team)
    with commit():
        key, second = teams.key_rotate(actor="test", key=key, grace_seconds=0)
    assert litellm.key(first)["status"] == "deleted"
    assert litellm.key(second)["status"] == "active"


@pytest.mark.parametrize("how", ["revoked", "expired"])
def test_a_revoked_or_expired_key_is_deleted_in_litellm(litellm, lite, org, commit, how):
    # given
    team = make_team(commit, org, [lite["lite"]])
    expires = timezone.now() + timedelta(hours=1)
    key, secret = make_key(commit, team, expires_at=expires)
    assert litellm.key(secret)["expires"] is not None
    # when
    with commit():
        if how == "revoked":
            teams.key_revoke(actor="test", key=key)
        else:
            teams.keys_expire_due(now=expires)
    # then
    assert litellm.key(secret)["status"] == "deleted"
    assert KeySync.objects.get(key=key).state == "synced"


def test_suspending_and_resuming_a_team_blocks_and_unblocks_it(litellm, lite, org, commit):
    team = make_team(commit, org, [lite["lite"]])
    with commit():
        teams.team_set_status(actor="test", team=team, status=Team.Status.PAUSED)
    assert litellm.teams[team.public_id]["blocked"] is True
    with commit():
        teams.team_set_status(actor="test", team=team, status=Team.Status.ACTIVE)
    assert litellm.teams[team.public_id]["blocked"] is False


def test_model_group_changes_reach_teams_and_restricted_keys(litellm, lite, org, commit):
    # given: a team on the LiteLLM group, a key restricted to it
    team = make_team(commit, org, [lite["lite"], lite["direct"]])
    _, secret = make_key(commit, team, model_groups=[lite["lite"]])
    restricted = make_key(commit, team, name="direct only", model_groups=[lite["direct"]])[1]
    assert litellm.key(secret)["models"] == ["fake-gpt"]
    assert litellm.key(restricted)["models"] == ["no-default-models"]  # not "everything"
    # when: the group gains a second LiteLLM model
    big = catalog.model_create(
        actor="test", name="gpt-big", upstream=lite["upstream"], upstream_model="fake-big"
    )
    with commit():
        members = [{"model": lite["model"]}, {"model": big}]
        catalog.model_group_update(actor="test", group=lite["lite"], data={}, members=members)
    # then
    assert litellm.teams[team.public_id]["models"] == ["fake-big", "fake-gpt"]
    assert litellm.key(secret)["models"] == ["fake-big", "fake-gpt"]
    # when: the team loses its LiteLLM group
    with commit():
        teams.team_update(actor="test", team=team, data={}, model_groups=[lite["direct"]])
    # then: LiteLLM must not read an empty list as "all models"
    assert litellm.teams[team.public_id]["models"] == ["no-default-models"]


def test_the_team_budget_is_its_remaining_credits_in_usd(litellm, lite, org, commit, settings):
    # given: 10 credits at 1.25 credits per USD
    settings.LITELLM_CREDITS_PER_USD = 1.25
    team = make_team(commit, org, [lite["lite"]])
    assert litellm.teams[team.public_id]["max_budget"] == 0.0
    with commit():
        credits_grant(
            team=team, amount_micros=10_000_000, reason="t", actor="t", idempotency_key="g1"
        )
    # when: the sweep notices the account moved
    sync.sync_due()
    # then
    assert litellm.teams[team.public_id]["max_budget"] == 8.0
    # given: LiteLLM has counted 0.5 USD of direct spend meanwhile
    litellm.teams[team.public_id]["spend"] = 0.5
    # when: a hard daily budget of 5 credits is set
    with commit():
        teams.team_update(
            actor="test",
            team=team,
            data={"budget_period": "daily", "budget_limit_micros": 5_000_000},
        )
    # then: LiteLLM may spend 4 USD more than it has
    assert litellm.teams[team.public_id]["max_budget"] == 4.5
    assert litellm.teams[team.public_id]["budget_duration"] is None


def test_an_allowance_credited_by_a_period_reset_reaches_litellm_at_once_like_a_grant(
    litellm, lite, org, commit
):
    # given: a team with a daily allowance of 10 credits, not credited yet
    team = make_team(
        commit, org, [lite["lite"]], budget_period="daily", allowance_micros=10_000_000
    )
    assert litellm.teams[team.public_id]["max_budget"] == 0.0
    # when: its period starts (and no sweep runs)
    with commit():
        resets.budget_period_reset(account_id=team.account.pk)
    # then: pushed at 1.25 credits per USD
    assert litellm.teams[team.public_id]["max_budget"] == 8.0


def test_usage_moves_the_litellm_budget_at_the_next_refresh(litellm, lite, org, commit):
    # given: 10 credits, pushed as 8 USD
    team = make_team(commit, org, [lite["lite"]])
    with commit():
        credits_grant(
            team=team, amount_micros=10_000_000, reason="t", actor="t", idempotency_key="g1"
        )
    assert litellm.teams[team.public_id]["max_budget"] == 8.0
    # when: 2 credits of gateway usage settle, right away and after the refresh interval
    settle_usage(team, 2_000_000, timezone.now())
    sync.sync_due()
    right_away = litellm.teams[team.public_id]["max_budget"]
    TeamSync.objects.update(synced_at=timezone.now() - timedelta(minutes=5))
    sync.sync_due()
    # then
    assert right_away == 8.0
    assert litellm.teams[team.public_id]["max_budget"] == 6.4


def test_a_key_budget_becomes_a_litellm_key_budget(litellm, lite, org, commit):
    team = make_team(commit, org, [lite["lite"]])
    _, secret = make_key(commit, team, budget_limit_micros=2_500_000)
    assert litellm.key(secret)["max_budget"] == 2.0  # at the default 1.25 credits per USD


def test_a_key_deleted_in_litellm_by_hand_is_flagged(litellm, lite, org, commit, api):
    # given
    team = make_team(commit, org, [lite["lite"]])
    key, _ = make_key(commit, team)
    litellm.delete_key_by_hand(key.key_hash)
    # when
    sync.full_resync()
    # then: flagged for an operator, not retried on its own
    state = api.get(f"/api/keys/{key.public_id}/").json()["litellm_sync"]
    assert state["state"] == "failed" and state["next_retry_at"] is None
    assert "deleted in LiteLLM" in state["error"] and "rotate" in state["error"]
    assert sync.sync_due()["keys"] == {}
    # when: the operator rotates the key
    with commit():
        _, fresh = teams.key_rotate(actor="test", key=key, grace_seconds=0)
    # then
    assert litellm.key(fresh)["status"] == "active"
    assert KeySync.objects.get(key=key).state == "synced"


def test_a_key_deleted_in_litellm_is_recreated_when_configured(
    litellm, lite, org, commit, settings
):
    # given
    settings.LITELLM_MISSING_KEY_ACTION = "recreate"
    team = make_team(commit, org, [lite["lite"]])
    key, secret = make_key(commit, team)
    assert list(KeySync.objects.get(key=key).secrets_encrypted) == [key.key_hash]  # kept
    litellm.delete_key_by_hand(key.key_hash)
    # when
    sync.full_resync()
    # then: the customer's same secret works in LiteLLM again
    assert litellm.key(secret)["status"] == "active"
    assert KeySync.objects.get(key=key).state == "synced"
    # and a revoked key's secret is forgotten even in this mode
    with commit():
        teams.key_revoke(actor="test", key=key)
    assert KeySync.objects.get(key=key).secrets_encrypted == {}


def test_full_resync_overwrites_edits_made_in_litellm_and_deletes_orphans(
    litellm, lite, org, commit
):
    # given: someone edits our team and key in LiteLLM, and a key of ours lost its record
    team = make_team(commit, org, [lite["lite"]], rpm_limit=10)
    _, secret = make_key(commit, team)
    litellm.teams[team.public_id]["rpm_limit"] = 10_000
    litellm.key(secret)["models"] = ["*"]
    litellm.keys["f" * 64] = {
        **litellm.key(secret),
        "token": "f" * 64,
        "key_alias": "stray",
    }
    litellm.keys["e" * 64] = {**litellm.keys["f" * 64], "token": "e" * 64, "metadata": {}}
    # when
    result = sync.full_resync()
    # then
    assert litellm.teams[team.public_id]["rpm_limit"] == 10
    assert litellm.key(secret)["models"] == []
    assert result["orphans_deleted"] == 1
    assert litellm.keys["f" * 64]["status"] == "deleted"
    assert litellm.keys["e" * 64]["status"] == "active"  # made by hand: not ours to delete


def test_keys_of_teams_made_before_the_integration_was_on_are_adopted_or_flagged(
    litellm, lite, org, commit, settings
):
    # given: a team and two keys created while the integration was off; LiteLLM happens to
    # hold one of them already
    settings.LITELLM_BASE_URL = ""
    team = make_team(commit, org, [lite["lite"]])
    known, known_secret = make_key(commit, team, name="known")
    unknown, _ = make_key(commit, team, name="unknown")
    settings.LITELLM_BASE_URL = litellm.url
    litellm.keys[known.key_hash] = {
        "token": known.key_hash, "key_alias": None, "team_id": None, "models": [],
        "max_budget": None, "spend": 0.0, "total_spend": 0.0, "expires": None, "metadata": {},
        "blocked": False, "status": "active", "rpm_limit": None, "tpm_limit": None,
    }  # fmt: skip
    # when
    sync.full_resync()
    # then
    assert litellm.teams[team.public_id]["models"] == ["fake-gpt"]
    assert KeySync.objects.get(key=known).state == "synced"
    assert litellm.key(known_secret)["team_id"] == team.public_id
    flagged = KeySync.objects.get(key=unknown)
    assert flagged.state == "failed" and "rotate" in flagged.last_error


def test_an_alias_taken_by_someone_elses_key_is_a_terminal_failure(litellm, lite, org, commit):
    # given: a stranger's key holds the alias our next key will use
    team = make_team(commit, org, [lite["lite"]])
    with commit():
        key, _ = teams.key_create(actor="test", team=team, name="k")
        litellm.keys["d" * 64] = {
            **dict.fromkeys(litellm.KEY_FIELDS), "token": "d" * 64, "status": "active",
            "key_alias": f"{key.public_id}.{key.key_hash[:8]}", "metadata": {}, "models": [],
        }  # fmt: skip
    # then
    record = KeySync.objects.get(key=key)
    assert record.state == "failed" and record.next_retry_at is None
    assert "already exists" in record.last_error
    assert list(record.secrets_encrypted) == [key.key_hash]  # still needed: not wiped


def test_deleting_a_team_deletes_it_and_its_keys_in_litellm(litellm, lite, org, commit):
    team = make_team(commit, org, [lite["lite"]])
    _, secret = make_key(commit, team)
    with commit():
        teams.team_delete(actor="test", team=team)
    assert team.public_id not in litellm.teams
    assert litellm.key(secret)["status"] == "deleted"
    assert not TeamSync.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_pushes_of_one_key_create_it_once(litellm, settings):
    # given: a key whose first push has not run yet
    up = catalog.upstream_create(actor="t", name="l", kind="litellm", base_url=litellm.url)
    model = catalog.model_create(actor="t", name="m", upstream=up, upstream_model="fake-gpt")
    group = catalog.model_group_create(actor="t", name="g", members=[{"model": model}])
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.LITELLM_BASE_URL = ""  # mint without pushing
    org = organization_create(actor="t", name="Race")[0]
    team = teams.team_create(actor="t", organization=org, name="T", model_groups=[group])
    key, secret = teams.key_create(actor="t", team=team, name="k")
    settings.LITELLM_BASE_URL = litellm.url
    sync.full_resync()  # creates the records; the key has no secret yet: flagged
    record = KeySync.objects.get(key=key)
    KeySync.objects.filter(pk=record.pk).update(secrets_encrypted={key.key_hash: encrypt(secret)})
    # when: eight workers push it at once

    def worker(_):
        return sync.key_push(record.pk, force=True)

    outcomes = race(worker, 8)
    # then: one key, created once
    assert [c for c in litellm.calls if c[1] == "/key/generate"] == [("POST", "/key/generate")]
    assert litellm.key(secret)["status"] == "active"
    assert "synced" in outcomes
    assert VirtualKey.objects.get(pk=key.pk).litellm_sync.state == "synced"
