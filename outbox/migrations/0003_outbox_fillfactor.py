"""Leave half of every outbox page free on PostgreSQL.

Every row is rewritten twice within seconds of its insert: the claim (lease token) and the
write-back (published). With free room on its page the claim is a HOT update (no index entry
touched) instead of a new tuple on another page plus one entry in every index; a batch claims
whole pages in one transaction, so the room has to hold a second version of every row.
Measured with bench/relay.py: about +20% relay throughput.
"""

from django.db import migrations

TABLE = "outbox_outboxevent"


def fillfactor_set(value: int):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(f"ALTER TABLE {TABLE} SET (fillfactor = {value})")
    return apply


class Migration(migrations.Migration):

    dependencies = [
        ("outbox", "0002_pending_rows_by_seq"),
    ]

    operations = [
        migrations.RunPython(fillfactor_set(50), fillfactor_set(100)),
    ]
