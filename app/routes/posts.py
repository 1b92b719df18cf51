"""``/api/posts``."""

from ..kinds import POSTS
from .content import content_blueprint

bp = content_blueprint(POSTS)
