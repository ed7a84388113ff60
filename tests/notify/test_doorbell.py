"""The FIFO doorbell with real FIFOs: rings wake readers, never block or fail a writer, never follow symlinks, and
dead readers' FIFOs are cleaned up."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hermes_cli.kanban import Board
from hermes_cli.kanban.live.doorbell import FIFO_SUFFIX, TMP_SUFFIX, Doorbell, ring

from .conftest import fifos


def pending_bytes(bell: Doorbell) -> int:
    n = 0
    try:
        while chunk := os.read(bell.fd, 65536):
            n += len(chunk)
    except BlockingIOError:
        pass
    return n


def test_ring_without_notify_dir_wakes_nobody(tmp_path: Path) -> None:
    assert ring(tmp_path / "missing") == 0


def test_ring_wakes_a_reader_and_rings_coalesce(tmp_path: Path) -> None:
    notify = tmp_path / "notify"
    with Doorbell(notify, "me") as bell:
        assert not bell.wait(0)
        assert ring(notify) == 1
        assert ring(notify) == 1
        assert bell.wait(0)  # both rings drained by one wake
        assert not bell.wait(0)


def test_fifo_and_directory_are_private(tmp_path: Path) -> None:
    notify = tmp_path / "notify"
    with Doorbell(notify, "me") as bell:
        assert stat.S_IMODE(os.lstat(notify).st_mode) == 0o700
        st = os.lstat(bell.path)
        assert stat.S_ISFIFO(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert bell.path.name.startswith(f"{os.getpid()}.me.")
        assert bell.path.name.endswith(FIFO_SUFFIX)
    assert fifos(notify) == []  # close() removes it


def test_a_fifo_without_reader_is_removed_by_the_next_ring(tmp_path: Path) -> None:
    notify = tmp_path / "notify"
    notify.mkdir(mode=0o700)
    orphan = notify / f"{os.getpid()}.ghost.00000000{FIFO_SUFFIX}"  # even with a live pid: published = was open
    os.mkfifo(orphan, 0o600)
    with Doorbell(notify, "live") as bell:
        assert ring(notify) == 1
        assert fifos(notify) == [bell.path.name]


def test_an_abandoned_temporary_fifo_is_removed_only_when_its_process_is_gone(tmp_path: Path) -> None:
    notify = tmp_path / "notify"
    notify.mkdir(mode=0o700)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    mine = notify / f"{os.getpid()}.starting.11111111{TMP_SUFFIX}"
    gone = notify / f"{dead_pid}.crashed.22222222{TMP_SUFFIX}"
    os.mkfifo(mine, 0o600)
    os.mkfifo(gone, 0o600)
    assert ring(notify) == 0
    assert fifos(notify) == [mine.name]


def test_ring_never_follows_a_symlinked_fifo(tmp_path: Path) -> None:
    notify = tmp_path / "notify"
    with Doorbell(notify, "target") as bell:
        (notify / f"1.link.33333333{FIFO_SUFFIX}").symlink_to(bell.path)
        assert ring(notify) == 1  # the reader itself, once; not again through the link
        assert pending_bytes(bell) == 1
        assert (notify / f"1.link.33333333{FIFO_SUFFIX}").is_symlink()  # left alone, not followed


def test_ring_never_follows_a_symlinked_notify_dir(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    with Doorbell(real, "target") as bell:
        link = tmp_path / "notify"
        link.symlink_to(real)
        assert ring(link) == 0
        assert pending_bytes(bell) == 0


def test_ring_never_writes_into_a_regular_file_or_directory_named_fifo(tmp_path: Path) -> None:
    notify = tmp_path / "notify"
    notify.mkdir(mode=0o700)
    (notify / f"1.file.44444444{FIFO_SUFFIX}").write_bytes(b"")
    (notify / f"1.dir.55555555{FIFO_SUFFIX}").mkdir()
    assert ring(notify) == 0
    assert (notify / f"1.file.44444444{FIFO_SUFFIX}").read_bytes() == b""


def test_a_full_pipe_does_not_block_the_ring(tmp_path: Path) -> None:
    notify = tmp_path / "notify"
    with Doorbell(notify, "slow") as bell:
        fd = os.open(bell.path, os.O_WRONLY | os.O_NONBLOCK)
        try:
            with pytest.raises(BlockingIOError):
                while True:
                    os.write(fd, b"\x01" * 4096)
        finally:
            os.close(fd)
        assert ring(notify) == 1  # EAGAIN counts as woken: the reader has rings waiting
        assert bell.wait(0)


def test_sigpipe_with_default_action_cannot_kill_a_ringing_writer() -> None:
    """A host program that restored SIGPIPE's default action: the ring's guard blocks it around the write."""
    code = r"""
import errno, os, signal
from hermes_cli.kanban.live.doorbell import _sigpipe_blocked
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
r, w = os.pipe()
os.close(r)
with _sigpipe_blocked():
    try:
        os.write(w, b"x")
    except BrokenPipeError:
        print("EPIPE")
assert signal.SIGPIPE not in signal.sigpending()
assert signal.SIGPIPE not in signal.pthread_sigmask(signal.SIG_BLOCK, set())
print("alive")
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (p.returncode, p.stdout.split()) == (0, ["EPIPE", "alive"]), p.stderr


def test_poke_wakes_a_waiting_thread(tmp_path: Path) -> None:
    with Doorbell(tmp_path / "notify", "me") as bell:
        woke: list[bool] = []
        t = threading.Thread(target=lambda: woke.append(bell.wait(60)))
        t.start()
        bell.poke()
        t.join(30)
        assert woke == [True]


def test_a_vanished_fifo_is_repaired(tmp_path: Path) -> None:
    notify = tmp_path / "notify"
    with Doorbell(notify, "me") as bell:
        old = bell.path
        os.unlink(old)
        assert not bell.healthy()
        assert bell.repair()
        assert bell.healthy() and bell.path != old
        assert ring(notify) == 1 and bell.wait(0)
        assert not bell.repair()


def test_wait_works_with_file_descriptors_above_1024(tmp_path: Path) -> None:
    """poll(2), not select(2): select cannot watch fds >= FD_SETSIZE."""
    held = []
    try:
        while True:
            fd = os.dup(0) if os.isatty(0) else os.open(os.devnull, os.O_RDONLY)
            held.append(fd)
            if fd > 1100:
                break
    except OSError as exc:
        for fd in held:
            os.close(fd)
        if exc.errno == errno.EMFILE:
            pytest.fail("RLIMIT_NOFILE is below 1100 here; raise it to run this test")
        raise
    try:
        with Doorbell(tmp_path / "notify", "many") as bell:
            assert bell.fileno() > 1024
            ring(tmp_path / "notify")
            assert bell.wait(5)
    finally:
        for fd in held:
            os.close(fd)


def test_commits_succeed_whatever_is_in_the_notify_dir(board: Board) -> None:
    notify = board.paths.notify_dir
    notify.mkdir(mode=0o700, exist_ok=True)
    os.mkfifo(notify / f"1.ghost.66666666{FIFO_SUFFIX}", 0o600)
    (notify / f"1.file.77777777{FIFO_SUFFIX}").write_bytes(b"")
    (notify / f"1.loop.88888888{FIFO_SUFFIX}").symlink_to(notify / f"1.loop.88888888{FIFO_SUFFIX}")
    task, created = board.create_task("still works")
    assert created and board.get_task(task.id).title == "still works"
    assert f"1.ghost.66666666{FIFO_SUFFIX}" not in fifos(notify)


def test_every_committing_write_rings(board: Board) -> None:
    with Doorbell(board.paths.notify_dir, "watch") as bell:
        task, _ = board.create_task("x")
        assert bell.wait(0)
        board.comment(task.id, "hello")
        assert bell.wait(0)
        board.complete(task.id)
        assert bell.wait(0)


def test_a_reader_killed_with_sigkill_has_its_fifo_removed_by_the_next_commit(board: Board) -> None:
    """A reader killed with SIGKILL leaves its FIFO behind; the next commit removes it."""
    code = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from hermes_cli.kanban.live.doorbell import Doorbell\n"
        "b = Doorbell(Path(sys.argv[1]), 'doomed')\n"
        "print(b.path.name, flush=True)\n"
        "time.sleep(60)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code, str(board.paths.notify_dir)], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    name = p.stdout.readline().strip()
    assert name in fifos(board.paths.notify_dir)
    p.send_signal(signal.SIGKILL)
    p.wait(30)
    p.stdout.close()
    board.create_task("after the reader died")
    assert name not in fifos(board.paths.notify_dir)
