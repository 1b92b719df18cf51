"""The test and development harness: ports, server discovery, scratch databases, embedded
servers, Redis servers to SIGKILL and restart, child processes and the web + worker + beat
stack.

Shared by tests/, loadtests/, benchmarks/ and ``make run`` (``python -m harness.devserver``).
Not part of the installed package: it is imported from the repository root.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
