"""``/api/articles`` (their comments are ``Comment`` rows)."""

from ..kinds import ARTICLES
from .content import content_blueprint

bp = content_blueprint(ARTICLES)
