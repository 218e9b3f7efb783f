"""A small Django site whose uploads live on a shelf.

``DATABASE_URL`` names its PostgreSQL database (``postgresql://user@host:port/name``, with an
optional ``?options=...``), ``SHELFLIFE_CONFIG`` the shelflife.toml of its storage.
"""

import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-key-for-the-example-site")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",
    "library",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]

ROOT_URLCONF = "library_site.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
WSGI_APPLICATION = "library_site.wsgi.application"


def database(url: str) -> dict[str, object]:
    """Django's DATABASES entry for a PostgreSQL URL."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "OPTIONS": {"options": query["options"][0]} if "options" in query else {},
    }


DATABASES = {
    "default": database(
        os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/library")
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

STATIC_URL = "static/"
STORAGES = {
    "default": {
        "BACKEND": "shelflife.contrib.django.ShelflifeStorage",
        "OPTIONS": {
            "config": os.environ.get("SHELFLIFE_CONFIG", str(BASE_DIR / "shelflife.toml")),
            "tier": "local",
        },
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
