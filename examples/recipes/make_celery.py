"""``celery -A make_celery worker`` / ``celery -A make_celery beat`` (Flask's pattern)."""

from recipes import create_app

flask_app = create_app()
celery_app = flask_app.extensions["celery"]
