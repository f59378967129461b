from django.db import migrations

# Every change to raw usage marks its team-hour pending for the roll-up, in the same
# transaction, for every client of the database (the settler, tests, a psql session): the
# usage API trusts a roll-up row exactly when its team-hour is not pending.
#
# ON CONFLICT DO UPDATE, not DO NOTHING: the update waits for a roll-up worker that has the row
# locked (claimed) and, once that worker has deleted it, inserts it again, so records committed
# after the worker's snapshot are never left out. Rows are marked in (team, hour) order so
# concurrent writers cannot deadlock on them. DELETE (pruning) marks nothing on purpose.
FORWARD = """
CREATE FUNCTION billing_usage_mark_pending() RETURNS trigger AS $$
BEGIN
    INSERT INTO billing_usagerolluppending (team_id, hour, marked_at)
    SELECT team_id, hour, now() FROM (
        SELECT DISTINCT team_id, date_trunc('hour', created_at, 'UTC') AS hour FROM changed_rows
    ) AS changed
    ORDER BY team_id, hour
    ON CONFLICT (team_id, hour) DO UPDATE SET marked_at = EXCLUDED.marked_at;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE FUNCTION billing_usage_mark_pending_update() RETURNS trigger AS $$
BEGIN
    INSERT INTO billing_usagerolluppending (team_id, hour, marked_at)
    SELECT team_id, hour, now() FROM (
        SELECT team_id, date_trunc('hour', created_at, 'UTC') AS hour FROM old_rows
        UNION
        SELECT team_id, date_trunc('hour', created_at, 'UTC') AS hour FROM new_rows
    ) AS changed
    ORDER BY team_id, hour
    ON CONFLICT (team_id, hour) DO UPDATE SET marked_at = EXCLUDED.marked_at;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER billing_usage_mark_pending_insert
    AFTER INSERT ON billing_usagerecord
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION billing_usage_mark_pending();

CREATE TRIGGER billing_usage_mark_pending_update
    AFTER UPDATE ON billing_usagerecord
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION billing_usage_mark_pending_update();

-- Records that exist already are rolled up by the first run.
INSERT INTO billing_usagerolluppending (team_id, hour, marked_at)
SELECT DISTINCT team_id, date_trunc('hour', created_at, 'UTC'), now() FROM billing_usagerecord
ON CONFLICT DO NOTHING;
"""

REVERSE = """
DROP TRIGGER IF EXISTS billing_usage_mark_pending_insert ON billing_usagerecord;
DROP TRIGGER IF EXISTS billing_usage_mark_pending_update ON billing_usagerecord;
DROP FUNCTION IF EXISTS billing_usage_mark_pending();
DROP FUNCTION IF EXISTS billing_usage_mark_pending_update();
"""


class Migration(migrations.Migration):
    dependencies = [("billing", "0005_usage_rollups")]

    operations = [migrations.RunSQL(FORWARD, REVERSE)]
