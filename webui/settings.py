"""Minimal settings so the test suite can import Django; the skeleton work replaces this file."""

SECRET_KEY = "placeholder-for-tests"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True
