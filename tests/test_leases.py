"""Lease owners: a restart on the same machine recognises its dead predecessor; nothing else is presumed dead."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kling_mcp.jobs.leases import new_owner, owner_is_dead


@pytest.mark.skipif(os.name != "posix", reason="the liveness probe is POSIX only")
def test_a_finished_process_on_this_machine_is_dead_and_nothing_else_is():
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    machine = new_owner().rsplit(":", 2)[0]
    assert owner_is_dead(f"{machine}:{done.stdout.strip()}:abcd1234")
    assert not owner_is_dead(new_owner())  # this process
    assert not owner_is_dead(f"{machine}:{os.getppid()}:abcd1234")  # alive
    assert not owner_is_dead(f"another-host/1:{done.stdout.strip()}:abcd1234")  # pids there mean other things
    assert not owner_is_dead("garbage")
