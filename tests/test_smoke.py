def test_master_key_lists_teams_of_every_tenant(api, tenant_a, tenant_b):
    # when
    response = api.get("/api/teams/")
    # then
    assert response.status_code == 200
    ids = {t["id"] for t in response.json()["results"]}
    assert ids == {tenant_a.team.public_id, tenant_b.team.public_id}
