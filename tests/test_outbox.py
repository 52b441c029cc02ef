from edge.outbox import Outbox


def test_fifo_and_persistent(tmp_path):
    q = Outbox(tmp_path, 10)
    for i in range(3):
        q.put(f"e{i}".encode())
    name, data = q.peek()
    assert data == b"e0"
    q.remove(name)
    again = Outbox(tmp_path, 10)  # a restart
    assert len(again) == 2 and again.peek()[1] == b"e1"
    again.put(b"e3")
    assert sorted(p.name for p in tmp_path.glob("*.json"))[-1] > name


def test_bound_drops_oldest_and_counts_across_restarts(tmp_path):
    q = Outbox(tmp_path, 3)
    for i in range(5):
        q.put(f"e{i}".encode())
    assert len(q) == 3 and q.dropped == 2 and q.peek()[1] == b"e2"
    assert Outbox(tmp_path, 3).dropped == 2


def test_half_written_files_are_ignored(tmp_path):
    (tmp_path / "000000000009.json.tmp").write_bytes(b"{partial")
    q = Outbox(tmp_path, 3)
    assert len(q) == 0 and q.peek() is None
    assert not list(tmp_path.glob("*.tmp"))
