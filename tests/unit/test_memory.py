"""The allocator setting: freed tensor memory is reused instead of faulted in again, in main and worker threads."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import textwrap

import pytest

import studio.memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# A child process (the setting is process-wide and cannot be undone) allocates, fills and frees a 40 MB tensor ten
# times, in the main thread and then in a new thread, and prints the page faults of such a loop: the least of three
# loops, because now and then, only late in a full test run, one loop faulted its block in once more (9,772 faults,
# then 0 in the next loops). 40 MB is above the largest block glibc's default ever keeps in its heap (32 MB), so by
# default every loop maps fresh pages.
CHILD = textwrap.dedent(
    """
    import json, resource, sys, threading
    import studio.memory
    import torch

    applied = studio.memory.retain_freed_memory() if sys.argv[1] == "retain" else None

    def faults_of_loop():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(10):
            block = torch.ones(10_000_000)
            del block
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    def least_faults():
        return min(faults_of_loop() for _ in range(3))

    faults_of_loop()  # the heap grows to the block's size once
    worker = {}
    thread = threading.Thread(target=lambda: (faults_of_loop(), worker.update(faults=least_faults())))
    thread.start()
    thread.join()
    print(json.dumps({"applied": applied, "main": least_faults(), "worker": worker["faults"]}))
    """
)


def child_faults(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="the setting applies to glibc only")
def test_retained_memory_is_reused_without_page_faults() -> None:
    default, retained = child_faults("default"), child_faults("retain")
    pages_per_block = 40_000_000 // 4096
    assert default["main"] >= 5 * pages_per_block  # each loop faulted its block in afresh
    assert retained["applied"] is True
    assert retained["main"] < pages_per_block // 10
    assert retained["worker"] < pages_per_block // 10


def test_applies_once_and_reports_other_c_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    set_glibc_options = studio.memory._set_glibc_options
    calls = []
    monkeypatch.setattr(studio.memory, "_applied", None)
    monkeypatch.setattr(studio.memory, "_set_glibc_options", lambda: calls.append(1) or True)
    assert studio.memory.retain_freed_memory() is True
    assert studio.memory.retain_freed_memory() is True
    assert calls == [1]

    monkeypatch.setattr(studio.memory, "_applied", None)
    monkeypatch.setattr(studio.memory, "_set_glibc_options", set_glibc_options)
    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", "1.2"))
    assert studio.memory.retain_freed_memory() is False


def test_the_studio_applies_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import studio.api

    calls = []
    monkeypatch.setattr(studio.api, "retain_freed_memory", lambda: calls.append(1) or True)
    studio.api.Studio()
    assert calls == [1]
