import django.contrib.postgres.fields
from django.db import migrations, models

# Each call's end user (the OpenAI `user` field, Messages' metadata.user_id) and its request
# tags. On the partitioned records' parent, so every partition gets them (see 0009), with
# constant defaults (no rewrite), kept so a settler of the release before inserts without them.
ADD = """ALTER TABLE billing_usagerecord
    ADD COLUMN end_user varchar(256) NOT NULL DEFAULT '',
    ADD COLUMN tags varchar(64)[] NOT NULL DEFAULT '{}'"""
DROP = "ALTER TABLE billing_usagerecord DROP COLUMN end_user, DROP COLUMN tags"


class Migration(migrations.Migration):
    dependencies = [("billing", "0009_usage_counts_by_kind")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(ADD, DROP)],
            state_operations=[
                migrations.AddField(
                    model_name="usagerecord",
                    name="end_user",
                    field=models.CharField(blank=True, db_default="", default="", max_length=256),
                ),
                migrations.AddField(
                    model_name="usagerecord",
                    name="tags",
                    field=django.contrib.postgres.fields.ArrayField(
                        base_field=models.CharField(max_length=64),
                        blank=True,
                        default=list,
                        size=None,
                    ),
                ),
            ],
        )
    ]
