from django.db import migrations, models

# Each call's counts of separately priced usage (cache reads and writes, reasoning, audio in and
# out, images, audio milliseconds, speech characters), on the raw records and the roll-ups.
#
# billing_usagerecord is partitioned (0008): ALTER TABLE on the parent adds each column to
# every partition, the default one included, and billing.partitions.create_month copies the
# parent (LIKE ... INCLUDING DEFAULTS), so months created later match. One ALTER TABLE per
# table: one lock and one catalog change, and a constant default is stored in the catalog, so
# no partition is rewritten. The default stays (db_default): a settler or roll-up worker of the
# release before, still running during a deploy, inserts without these columns.
COLUMNS = (
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "audio_input_tokens",
    "audio_output_tokens",
    "image_count",
    "audio_ms",
    "characters",
)
TABLES = {
    "usagerecord": "billing_usagerecord",
    "usagehourly": "billing_usagehourly",
    "usagedaily": "billing_usagedaily",
}


def _add(table: str) -> str:
    added = ", ".join(f"ADD COLUMN {c} bigint NOT NULL DEFAULT 0" for c in COLUMNS)
    return f"ALTER TABLE {table} {added}"


def _drop(table: str) -> str:
    return f"ALTER TABLE {table} " + ", ".join(f"DROP COLUMN {c}" for c in COLUMNS)


class Migration(migrations.Migration):
    dependencies = [("billing", "0008_usage_records_partitioned")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(_add(table), _drop(table)) for table in TABLES.values()
            ],
            state_operations=[
                migrations.AddField(
                    model_name=model,
                    name=column,
                    field=models.BigIntegerField(db_default=0, default=0),
                )
                for model in TABLES
                for column in COLUMNS
            ],
        )
    ]
