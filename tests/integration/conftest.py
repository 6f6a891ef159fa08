import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from harness import Sluiced  # noqa: E402

# Every runtime/protocol test runs on each backend of the connection
# interface; chaos splits input down to single bytes, shortens sends and
# delays completions.
BACKENDS = os.environ.get("SLUICE_BACKENDS", "uring,epoll,chaos").split(",")


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def make_sluiced(backend):
    started = []

    def make(**kw):
        kw.setdefault("backend", backend)
        s = Sluiced(**kw)
        started.append(s)
        return s

    yield make
    reports = []
    for s in started:
        try:
            s.kill()  # raises on a sanitizer report in the log
        except AssertionError as e:
            reports.append(str(e))
        # Each instance preallocates segments: a temp dir left behind per
        # test fills the disk of a machine that runs the suites all day.
        # SLUICE_KEEP_TMP=1 keeps them for a post-mortem.
        if not os.environ.get("SLUICE_KEEP_TMP"):
            shutil.rmtree(s.tmp, ignore_errors=True)
    if reports:
        pytest.fail("\n".join(reports))
