from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('outbox', '0001_initial'),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='outboxevent',
            name='outbox_pending_idx',
        ),
        migrations.AddIndex(
            model_name='outboxevent',
            index=models.Index(condition=models.Q(('status', 'pending')), fields=['seq'], name='outbox_pending_seq_idx'),
        ),
        migrations.RemoveIndex(
            model_name='outboxevent',
            name='outbox_published_at_idx',
        ),
        migrations.AddIndex(
            model_name='outboxevent',
            index=models.Index(condition=models.Q(('status', 'published')), fields=['published_at'], name='outbox_published_at_idx'),
        ),
    ]
