"""A web process with the view spool on that SIGKILLs itself (for the spool's tests).

    python tests/app/spool_victim.py POST_ID [POST_ID ...]

Configured from the environment (tests.app.conftest.process_env plus
COUNTERS_COALESCE_SPOOL_DIR). Per post: one view (synchronous: its first), four views
pushed to Redis, three more only in the spool; then SIGKILL.
"""

import os
import signal
import sys

from app import create_app

os.environ["COUNTERS_COALESCE_MS"] = "3600000"  # pushes happen when this script says
app = create_app()
page = app.test_client()
coalescer = app.extensions["counters"].coalescer
posts = [int(a) for a in sys.argv[1:]]
for post in posts:
    for _ in range(5):
        assert page.post(f"/api/posts/{post}/view").status_code == 204
assert coalescer.push() == 4 * len(posts)
for post in posts:
    for _ in range(3):
        assert page.post(f"/api/posts/{post}/view").status_code == 204
os.kill(os.getpid(), signal.SIGKILL)
