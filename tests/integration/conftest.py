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
    for s in started:
        s.kill()
    # Segments are preallocated: a data dir left behind by every test fills
    # the disk within a few runs. The log and config stay for post-mortems.
    for s in started:
        if os.path.abspath(s.data_dir).startswith(os.path.abspath(s.tmp) + os.sep):
            shutil.rmtree(s.data_dir, ignore_errors=True)
