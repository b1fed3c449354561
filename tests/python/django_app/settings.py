"""Django settings of the test app: the database is shardgate, at SHARDGATE_URL."""
import os
from urllib.parse import urlparse

_url = urlparse(os.environ["SHARDGATE_URL"])
SECRET_KEY = "test only"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "shop"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _url.path.lstrip("/"),
        "USER": _url.username,
        "PASSWORD": _url.password,
        "HOST": _url.hostname,
        "PORT": str(_url.port),
    }
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
