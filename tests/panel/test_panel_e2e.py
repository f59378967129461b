"""The panel in a real browser: Debian's Chromium, driven by Playwright, against the whole ASGI
application (panel, static files, gateway and mock upstream) served by uvicorn.

Screenshots of each main page land in tests/artifacts/screenshots/ (kept after the run,
ignored by git) so a person can look at them."""

import re
import shutil
from pathlib import Path

import httpx
import pytest

from tests.helpers.panel import PASSWORD, make_user

CHROMIUM = "/usr/bin/chromium"
# No downloads, no background chatter: the machines have no internet.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None,
        reason=f"{CHROMIUM} is missing: `apt-get install chromium` (make test does it as root)",
    ),
]


@pytest.fixture
def browser(monkeypatch):
    from django.db import connections

    # The server answers each request in a fresh thread with its own connection: a max age
    # of 0 closes it after the request, so the test database can be dropped at the end.
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 0)
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]'")
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls
    # (setup and settlement) are plain blocking calls between browser steps.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
        # Playwright's greenlet gives this test its own Django connection (connections are
        # context-local): close it, or the test database cannot be dropped at the end.
        connections.close_all()


def shot(page, name: str) -> None:
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def test_an_admin_runs_the_business_from_the_browser(live, browser, settings):
    from alerts.services import alerts_evaluate
    from billing import settlement, tasks
    from billing.models import LedgerEntry
    from core.money import display_micros
    from tests.helpers.servers import Receiver

    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True  # the webhook receiver is on localhost

    make_user("admin", "admin")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("dialog", lambda dialog: dialog.accept())
    # Every page runs under the Content-Security-Policy: anything it blocks is a failure.
    blocked = []
    page.on(
        "console",
        lambda message: "Content Security Policy" in message.text and blocked.append(message.text),
    )
    base = live.url

    # Log in (the dashboard sends an anonymous visitor to the login page)
    page.goto(f"{base}/")
    assert "/login/" in page.url
    shot(page, "01-login")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Dashboard").wait_for()
    assert page.evaluate("typeof htmx") == "object"  # the vendored script loaded
    shot(page, "02-dashboard-empty")

    # An organization
    page.get_by_role("link", name="Organizations").click()
    shot(page, "03-organizations-empty")
    page.get_by_role("link", name="New organization").click()
    page.get_by_label("Name").fill("Acme Corp")
    page.get_by_label("External id").fill("crm-42")
    page.get_by_role("button", name="Create organization").click()
    page.get_by_role("heading", name="Acme Corp").wait_for()
    org_url = page.url

    # The catalog: an upstream (the live mock), a model, a model group
    page.get_by_role("link", name="Upstreams").click()
    page.get_by_role("link", name="New upstream").first.click()
    page.get_by_label("Name").fill("mock")
    page.get_by_label("Kind").select_option("mock")
    page.get_by_label("Base URL").fill(live.mock_url)
    page.get_by_label("API key").fill("sk-upstream-secret-e2e")
    page.get_by_role("button", name="Create upstream").click()
    page.get_by_text("Upstream mock created.").wait_for()
    assert "sk-upstream-secret-e2e" not in page.content()
    shot(page, "04-upstreams")
    # "Test connection" makes a real call (through htmx, in place)
    page.get_by_role("link", name="mock").click()
    page.get_by_role("button", name="Test connection").click()
    page.locator("#probe-slot").get_by_text("It works.").wait_for()
    shot(page, "04b-upstream-test")

    page.get_by_role("link", name="Models").click()
    page.get_by_role("link", name="New model").first.click()
    page.get_by_label("Name").fill("mock-a")
    page.get_by_label("Upstream", exact=True).select_option(label="mock")
    page.get_by_label("Upstream model").fill("mock-a")
    page.get_by_label("Input price (credits per 1M tokens)").fill("1000")
    page.get_by_label("Output price (credits per 1M tokens)").fill("2000")
    page.get_by_role("button", name="Create model").click()
    page.get_by_text("Model mock-a created.").wait_for()
    shot(page, "05-models")

    page.get_by_role("link", name="Model groups").click()
    page.get_by_role("link", name="New model group").first.click()
    page.get_by_label("Name", exact=True).fill("chat")
    page.get_by_label("Display name").fill("Chat")
    page.get_by_label("Model in row 1").select_option(label="mock-a")
    page.get_by_label("Weight in row 1").fill("3")
    shot(page, "06-model-group-editor")
    page.get_by_role("button", name="Create model group").click()
    page.get_by_text("Model group chat created.").wait_for()
    shot(page, "07-model-groups")

    # A team in the organization, with the group and a budget
    page.goto(org_url)
    page.get_by_role("link", name="New team").click()
    page.get_by_label("Name", exact=True).fill("Acme prod")
    page.get_by_label("chat").check()
    page.get_by_label("Requests per minute").fill("600")
    page.get_by_label("Budget period").select_option("monthly")
    page.get_by_label("Budget per period (credits)").fill("100")
    page.get_by_role("button", name="Create team").click()
    page.get_by_role("heading", name="Acme prod").wait_for()
    team_url = page.url

    # Credits: a grant with a reason, then the ledger shows it
    page.get_by_label("Amount (credits)").fill("25.00")
    page.get_by_label("Reason").fill("prepaid invoice 17")
    page.get_by_role("button", name="Post to the ledger").click()
    page.get_by_text("Posted 25.00 credits to Acme prod.").wait_for()
    ledger = page.get_by_role("region", name="Recent ledger entries")
    assert "prepaid invoice 17" in ledger.inner_text()
    assert "user:admin" in ledger.inner_text()
    assert page.locator("#balance").inner_text() == "25.00 credits"

    # A key: the secret is shown once, with a copy button
    mint = page.locator("details", has_text="Mint a new key")
    if mint.get_attribute("open") is None:  # open already while the team has no key
        mint.locator("summary").click()
    page.get_by_label("Name", exact=True).fill("backend")
    page.get_by_role("button", name="Mint key").click()
    page.get_by_text("It will not be shown again").wait_for()
    secret = page.locator("#secret").input_value()
    assert secret.startswith("sk-")
    page.get_by_role("button", name="Copy").click()
    shot(page, "08-key-secret")
    page.get_by_role("link", name="I have copied it").click()
    assert secret not in page.content()
    shot(page, "09-key-detail")

    # The key works at the gateway, and the call's charge reaches the ledger
    response = httpx.post(
        f"{base}/v1/chat/completions",
        headers={"Authorization": f"Bearer {secret}"},
        json={"model": "chat", "messages": [{"role": "user", "content": "Hello from e2e"}]},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    tasks.settle_usage()
    usage_entry = LedgerEntry.objects.get(kind="usage")
    page.goto(team_url)
    ledger_text = page.get_by_role("region", name="Recent ledger entries").inner_text()
    assert "usage" in ledger_text
    assert usage_entry.amount_micros < 0
    shot(page, "10-team-detail")
    # The CSV export streams from the ASGI server with the browser's session
    export = page.request.get(
        f"{base}/usage/?format=csv&team={team_url.rstrip('/').split('/')[-1]}"
    )
    rows = export.text().splitlines()
    assert export.ok and rows[0].startswith("created_at,request_id")
    assert len(rows) == 2 and response.headers["x-request-id"] in rows[1]
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "11-team-detail-phone")
    page.set_viewport_size({"width": 1280, "height": 900})

    # The playground: a prompt through the real gateway, the answer streamed into the page,
    # then the charge once the call is settled
    page.get_by_role("main").get_by_role("link", name="Playground").click()
    page.get_by_label("Model group").select_option(label="chat")
    page.get_by_label("Prompt", exact=True).fill("Say hello to the browser test")
    page.get_by_role("button", name="Send").click()
    page.locator("#answer").get_by_text("Mock reply to: Say hello to the browser test").wait_for()
    page.locator("#answer-status.success").wait_for()
    assert "Tokens:" in page.locator("#answer-facts").inner_text()
    page.get_by_text("Settling the charge").wait_for()
    shot(page, "18-playground-settling")
    settlement.settle_usage()
    page.locator("#result-price").wait_for()
    played = LedgerEntry.objects.filter(kind="usage").latest("pk")
    assert played.pk != usage_entry.pk
    price = f"{display_micros(-played.amount_micros)} credits"
    assert page.locator("#result-price").inner_text() == price
    # the team's balance at the top follows the charge
    assert page.locator("#playground-balance").inner_text() == (
        f"{display_micros(played.balance_after_micros)} credits"
    )
    assert secret not in page.content()
    shot(page, "19-playground")
    # and the charge is in the team's ledger
    page.get_by_role("link", name="Acme prod's ledger").click()
    page.get_by_role("heading", name="Ledger").wait_for()
    assert page.locator("tbody tr").filter(has_text="usage").count() == 2
    shot(page, "20-team-ledger")

    # A job: opened at the gateway with the customer's key, a call made in it, completed, and
    # settled; then its page shows its calls, tokens and price
    auth = {"Authorization": f"Bearer {secret}"}
    opened = httpx.post(
        f"{base}/v1/jobs",
        headers=auth,
        json={"type": "summarize", "metadata": {"document": "e2e-1"}},
        timeout=10,
    )
    assert opened.status_code == 201, opened.text
    job_id = opened.json()["id"]
    in_job = httpx.post(
        f"{base}/v1/chat/completions",
        headers={**auth, "x-job-id": job_id},
        json={"model": "chat", "messages": [{"role": "user", "content": "A job's call"}]},
        timeout=10,
    )
    assert in_job.status_code == 200, in_job.text
    closed = httpx.post(
        f"{base}/v1/jobs/{job_id}/complete", headers=auth, json={"status": "completed"}, timeout=10
    )
    assert closed.status_code == 200, closed.text
    settlement.settle_usage()
    page.goto(team_url)
    page.get_by_role("main").get_by_role("link", name="Jobs").click()
    page.get_by_role("link", name=job_id).wait_for()
    shot(page, "21-jobs")
    page.get_by_role("link", name=job_id).click()
    assert page.locator("#job-calls").inner_text() == "1"
    job_call = in_job.json()["usage"]
    assert page.locator("#job-tokens").inner_text() == (
        f"{job_call['prompt_tokens']} / {job_call['completion_tokens']}"
    )
    assert in_job.headers["x-request-id"] in page.locator("main").inner_text()
    shot(page, "22-job-detail")

    # The logs page: every call, newest first; a call's row opens its detail
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Logs").click()
    page.get_by_role("heading", name="Logs").wait_for()
    calls = page.locator("main tbody tr")
    assert calls.count() == 3  # the first call, the playground's and the job's
    assert in_job.headers["x-request-id"] in calls.first.inner_text()
    shot(page, "27-logs")
    calls.first.get_by_role("link").first.click()
    page.get_by_role("heading", name=in_job.headers["x-request-id"]).wait_for()
    assert page.locator("#call-tokens").inner_text() == (
        f"{job_call['prompt_tokens']} / {job_call['completion_tokens']}"
    )
    assert page.get_by_role("link", name=job_id).count() == 1
    shot(page, "28-call-detail")

    # The models with their health: "Check now" probes the model through the real mock
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Models").click()
    assert page.locator('[data-health="mock-a"]').inner_text() == "unknown"
    page.get_by_role("button", name="Check mock-a now").click()
    page.get_by_text("mock-a is up: it answered in").wait_for()
    assert page.locator('[data-health="mock-a"]').inner_text() == "up"
    shot(page, "29-models-health")

    # The newer settings: a low balance alert line above the balance
    page.goto(team_url)
    page.get_by_role("main").get_by_role("link", name="Settings").click()
    page.get_by_label("Low balance alert (credits)").fill("100")
    page.get_by_label("Cache answers for (seconds)").fill("60")
    shot(page, "23-team-settings")
    page.get_by_role("button", name="Save settings").click()
    page.get_by_text("Team settings saved.").wait_for()

    # A webhook endpoint for the organization: the secret once, then alerts delivered to it
    receiver = Receiver()
    try:
        page.goto(org_url)
        page.get_by_role("link", name="New webhook endpoint").click()
        page.get_by_label("URL").fill(receiver.url)
        page.get_by_label("Description").fill("ops alerts")
        page.get_by_role("button", name="Create endpoint").click()
        page.get_by_text("It will not be shown again").wait_for()
        assert page.locator("#secret").input_value().startswith("whsec_")
        shot(page, "24-webhook-secret")
        page.get_by_role("link", name="I have copied it").click()
        assert alerts_evaluate() == 1  # the balance is below the new line
        page.reload()
        page.locator("tbody").get_by_text("succeeded").wait_for()
        assert len(receiver.requests) == 1
        shot(page, "25-webhook-delivery-log")
        page.get_by_role("button", name="Disable").click()
        page.get_by_text("Endpoint disabled.").wait_for()
    finally:
        receiver.close()
    page.goto(team_url)
    page.get_by_role("main").get_by_role("link", name="Alerts").click()
    page.get_by_text("below 100.00").wait_for()
    shot(page, "26-team-alerts")
    page.goto(team_url)

    # A destructive action asks first
    page.get_by_text("Suspend…").click()
    page.get_by_role("button", name="Yes, suspend").click()
    page.get_by_text("Team Acme prod suspended.").wait_for()

    # The other main pages
    for link, name in [
        ("Dashboard", "12-dashboard"),
        ("Teams", "13-teams"),
        ("Keys", "14-keys"),
        ("Usage", "15-usage"),
        ("Audit log", "16-audit-log"),
    ]:
        page.get_by_role("navigation", name="Main").get_by_role("link", name=link).click()
        page.wait_for_load_state()
        shot(page, name)
    assert re.search(r"user:admin\s+credits\.grant", page.locator("main").inner_text())

    # Live search narrows a list without a page load
    page.get_by_role("link", name="Organizations").click()
    page.get_by_label("Search").fill("nothing like this")
    page.get_by_text("No organization matches").wait_for()
    page.get_by_label("Search").fill("Acme")
    page.get_by_role("link", name="Acme Corp").wait_for()
    shot(page, "17-organizations")
    assert blocked == []


PHONE = {"width": 390, "height": 844}


def test_every_page_is_usable_on_a_phone(live, browser, tenant_a, tenant_b):
    """At 390 px wide: every navigation entry on screen (they wrap, none scrolled off), and
    nothing wider than the screen: wide tables scroll inside their box, not the page."""
    from tests.helpers.panel import record_usage

    for _ in range(3):
        record_usage(tenant_a.team, tenant_a.key, price=12_345_678, cost=4_200)
    make_user("admin", "admin")
    page = browser.new_page(viewport=PHONE)
    base = live.url
    page.goto(f"{base}/login/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Dashboard").wait_for()
    team = tenant_a.team.public_id
    for path, name in [
        ("/", "40-phone-dashboard"),
        (f"/teams/{team}/", "41-phone-team"),
        (f"/usage/?team={team}", "42-phone-usage"),
        (f"/teams/new/?org={tenant_a.org.public_id}", "43-phone-team-form"),
    ]:
        page.goto(f"{base}{path}")
        page.wait_for_load_state()
        shot(page, name)
        # no sideways scrolling of the page
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{path} is {width} px wide"
        # every entry of the navigation is on screen
        for link in page.get_by_role("navigation", name="Main").get_by_role("link").all():
            box = link.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (
                path,
                link.inner_text(),
            )
    # and a wide table scrolls inside its box
    page.goto(f"{base}/usage/?team={team}")
    wraps = page.evaluate(
        "[...document.querySelectorAll('.table-wrap')].map(w => [w.scrollWidth, w.clientWidth])"
    )
    assert wraps and all(client <= PHONE["width"] for _, client in wraps)
    assert any(scroll > client for scroll, client in wraps)
