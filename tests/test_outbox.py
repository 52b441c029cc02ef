import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from edge.sinks.outbox import Outbox


def ev(i) -> bytes:
    return json.dumps({"id": f"e{i}"}).encode()


def ids(q) -> list[str]:
    out = []
    while (item := q.peek()) is not None:
        out.append(json.loads(item[1])["id"])
        q.remove(item[0])
    return out


def test_fifo_and_persistent(tmp_path):
    q = Outbox(tmp_path, 10)
    for i in range(3):
        q.put(ev(i))
    name, data = q.peek()
    assert data == ev(0)
    q.remove(name)
    again = Outbox(tmp_path, 10)  # a restart
    assert len(again) == 2 and again.peek()[1] == ev(1)
    again.put(ev(3))
    assert sorted(p.name for p in tmp_path.glob("*.json"))[-1] > name
    assert ids(again) == ["e1", "e2", "e3"]


def test_bound_drops_oldest_counts_across_restarts_and_says_so_once(tmp_path, caplog):
    q = Outbox(tmp_path, 3)
    with caplog.at_level(logging.INFO, "edge.sinks.outbox"):
        for i in range(6):
            q.put(ev(i))
    assert len(q) == 3 and q.dropped == 3 and q.peek()[1] == ev(3)
    full = [r for r in caplog.records if "queue full" in r.getMessage()]
    assert len(full) == 1 and "mqtt.queue_max = 3" in full[0].getMessage()
    assert "raise mqtt.queue_max" in full[0].getMessage()
    assert Outbox(tmp_path, 3).dropped == 3
    caplog.clear()
    with caplog.at_level(logging.INFO, "edge.sinks.outbox"):
        q.remove(q.peek()[0])
        q.remove(q.peek()[0])
    assert any("below mqtt.queue_max again; 3" in r.getMessage() for r in caplog.records)


def test_half_written_files_are_ignored(tmp_path):
    (tmp_path / "000000000009.json.tmp").write_bytes(b"{partial")
    q = Outbox(tmp_path, 3)
    assert len(q) == 0 and q.peek() is None
    assert not list(tmp_path.glob("*.tmp"))


def test_empty_and_truncated_entries_are_quarantined_once_each(tmp_path, caplog):
    (tmp_path / "000000000001.json").write_bytes(ev(1))
    (tmp_path / "000000000002.json").write_bytes(b"")
    (tmp_path / "000000000003.json").write_bytes(ev(3)[:7])
    (tmp_path / "000000000004.json").write_bytes(b"[1, 2]")
    (tmp_path / "000000000005.json").write_bytes(ev(5))
    with caplog.at_level(logging.WARNING, "edge.sinks.outbox"):
        q = Outbox(tmp_path, 10)
    assert ids(q) == ["e1", "e5"]
    bad = sorted(p.name for p in (tmp_path / "quarantine").iterdir())
    assert bad == ["000000000002.json", "000000000003.json", "000000000004.json"]
    for name in bad:
        assert len([r for r in caplog.records if name in r.getMessage()]) == 1
    q.put(ev(6))  # numbered after the quarantined ones
    assert q.peek()[0] == "000000000006.json"


def test_foreign_files_and_a_bad_counter_are_survived(tmp_path, caplog):
    (tmp_path / "notes.json").write_text("my notes")
    (tmp_path / "dropped").write_text("abc")
    (tmp_path / "000000000007.json").write_bytes(ev(7))
    with caplog.at_level(logging.INFO, "edge.sinks.outbox"):
        q = Outbox(tmp_path, 10)
    assert q.dropped == 0 and (tmp_path / "dropped").read_text() == "0"
    assert any("'abc'" in r.getMessage() and "starts again at 0" in r.getMessage()
               for r in caplog.records)
    assert any("notes.json" in r.getMessage() for r in caplog.records)
    assert ids(q) == ["e7"]
    assert (tmp_path / "notes.json").read_text() == "my notes"


def test_a_folder_that_cannot_be_created_queues_in_memory_until_it_can(tmp_path, caplog):
    (tmp_path / "state").write_text("")
    with caplog.at_level(logging.WARNING, "edge.sinks.outbox"):
        q = Outbox(tmp_path / "state" / "outbox", 10)
        for i in range(3):
            q.put(ev(i))
        assert len(q) == 3 and q.in_memory == 3
        (tmp_path / "state").unlink()  # the state folder's place is free again
        q.put(ev(3))
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2, said
    assert "state/outbox cannot be created (Not a directory)" in said[0]
    assert "service.state_dir" in said[0] and "restart" not in said[0]
    assert "can be written again; 3 event(s) held in memory moved to it" in said[1]
    assert ids(Outbox(tmp_path / "state" / "outbox", 10)) == ["e0", "e1", "e2", "e3"]


def test_a_folder_that_cannot_be_listed_is_left_alone(tmp_path, caplog):
    """Run as an ordinary user, for whom a root-owned mode-000 folder is unreadable: an entry
    hiding in it must not be overwritten, so new events stay in memory."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv(1) to run as another user")
    home = Path(tempfile.mkdtemp(prefix="outbox-unlistable-"))
    try:
        home.chmod(0o755)
        (home / "outbox").mkdir()
        (home / "outbox" / "000000000001.json").write_bytes(ev("hidden"))
        (home / "outbox").chmod(0)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            sys.executable, "-c", LISTING_SCRIPT, str(home / "outbox")],
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": os.getcwd()})
        if "No module named" in r.stderr:
            pytest.skip(f"this checkout cannot be read by uid 65534: {r.stderr[-300:]}")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["e0", "e1"]
        assert "cannot be opened (Permission denied)" in r.stderr and "restart" in r.stderr
        assert json.loads((home / "outbox" / "000000000001.json").read_bytes()) == {"id": "ehidden"}
    finally:
        shutil.rmtree(home)


LISTING_SCRIPT = """
import json, logging, sys
logging.basicConfig()
from edge.sinks.outbox import Outbox
q = Outbox(sys.argv[1], 10)
q.put(json.dumps({"id": "e0"}).encode()); q.put(json.dumps({"id": "e1"}).encode())
while (item := q.peek()) is not None:
    print(json.loads(item[1])["id"]); q.remove(item[0])
"""


def test_failed_writes_keep_order_leave_no_temp_file_and_recover(tmp_path, caplog):
    folder = tmp_path / "outbox"
    q = Outbox(folder, 10)
    q.put(ev(0))
    # the folder turns into a file: every write now fails in the kernel (ENOTDIR)
    os.rename(folder, tmp_path / "away")
    folder.write_text("")
    with caplog.at_level(logging.WARNING, "edge.sinks.outbox"):
        q.put(ev(1))
        q.put(ev(2))
        assert q.in_memory == 2
        folder.unlink()
        os.rename(tmp_path / "away", folder)
        q.put(ev(3))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "cannot be written (Not a directory)" in messages[0] and str(folder) in messages[0]
    assert "can be written again; 2 event(s) held in memory moved to it" in messages[1]
    assert q.in_memory == 0 and not list(folder.glob("*.tmp"))
    assert ids(Outbox(folder, 10)) == ["e0", "e1", "e2", "e3"]  # all on disk, in order


def run_in_own_mounts(script: str, setup: str) -> subprocess.CompletedProcess:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) for a private mount namespace")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"mount namespaces are not allowed here: {probe.stderr.strip()}")
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-ec",
                           f'{setup}\nexec "{sys.executable}" -c "$0"', script],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})


DISK_SCRIPT = """
import json, logging, os, sys
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
from edge.sinks.outbox import Outbox
q = Outbox(sys.argv[1] if len(sys.argv) > 1 else os.environ["Q"], 10000)
for i in range(300):
    q.put(json.dumps({"id": f"e{i}", "pad": "x" * 500}).encode())
got = []
while (item := q.peek()) is not None:
    got.append(json.loads(item[1])["id"]); q.remove(item[0])
print("ORDER", got == [f"e{i}" for i in range(300)], "MEMORY", q.in_memory,
      "TMP", [n for n in os.listdir(os.environ["Q"]) if n.endswith(".tmp")])
"""


def test_a_full_disk_degrades_in_order_without_temp_files(tmp_path):
    r = run_in_own_mounts(DISK_SCRIPT, f"mount -t tmpfs -o size=64k tmpfs {tmp_path}\n"
                          f"export Q={tmp_path}/outbox")
    assert r.returncode == 0, r.stderr
    assert "ORDER True MEMORY 0 TMP []" in r.stdout
    errors = [line for line in r.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "No space left on device" in errors[0], r.stderr


def test_a_read_only_disk_degrades(tmp_path):
    (tmp_path / "outbox").mkdir()
    (tmp_path / "outbox" / "000000000001.json").write_bytes(ev("old"))
    r = run_in_own_mounts(DISK_SCRIPT.replace("range(300)", "range(3)").replace(
        'f"e{i}" for i in range(3)', '"eold", "e0", "e1", "e2"'),
        f"mount --bind -o ro {tmp_path} {tmp_path}\nexport Q={tmp_path}/outbox")
    assert r.returncode == 0, r.stderr
    assert "ORDER True MEMORY 0 TMP []" in r.stdout
    errors = [line for line in r.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "Read-only file system" in errors[0], r.stderr
