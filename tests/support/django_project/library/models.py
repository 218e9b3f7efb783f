from django.db import models

from shelflife.contrib.django import ShelflifeStorage


class Document(models.Model):
    """An upload on the default storage (STORAGES["default"]): a shelf."""

    title = models.CharField(max_length=200)
    # Room for the longest spelling a migration may rewrite the name to (s3://bucket/...).
    file = models.FileField(upload_to="documents/%Y/", max_length=500, db_index=True)
    uploaded_at = models.DateTimeField(auto_now_add=True)


class Attachment(models.Model):
    """An upload on a storage given to the field itself (kept in the migration)."""

    file = models.FileField(
        upload_to="attachments/",
        max_length=500,
        storage=ShelflifeStorage(tier="local", tags={"kind": "attachment"}),
    )
