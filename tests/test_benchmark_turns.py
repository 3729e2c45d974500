"""The GPU benchmark's turn-taking (benchmarks/gpu/run_gpu.py, class Turns): two engine runs that
alternate their timed segments. A broken alternation would let both sides run at once and skew
every ratio the benchmark prints, so it is checked here with two threads standing in for the
two engine processes (the class only reads and writes a counter file)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "gpu"))

from run_gpu import Turns  # noqa: E402


def test_two_sides_alternate_and_never_overlap(tmp_path: Path) -> None:
    log: list[tuple[int, str]] = []
    lock = threading.Lock()
    inside = [0]

    def side(me: int, turns: int) -> None:
        t = Turns(tmp_path, me, timeout_s=30)
        for _ in range(turns):
            with t.take():
                with lock:
                    inside[0] += 1
                    log.append((me, "in" if inside[0] == 1 else "overlap"))
                time.sleep(0.01 * (2 - me))  # side 0 slower: order must not depend on speed
                with lock:
                    inside[0] -= 1

    threads = [threading.Thread(target=side, args=(me, 4)) for me in (1, 0)]  # side 1 starts first
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert [m for m, _ in log] == [0, 1] * 4
    assert all(state == "in" for _, state in log)
    assert (tmp_path / "turn").read_text() == "8"


def test_a_side_waiting_for_a_gone_peer_times_out_with_a_message(tmp_path: Path) -> None:
    with pytest.raises(TimeoutError, match=r"side 1: the other side did not pass the turn"):
        with Turns(tmp_path, 1, timeout_s=0.2).take():
            pass


def test_without_a_folder_every_turn_is_taken_at_once() -> None:
    t = Turns(None, 1)
    with t.take():
        with t.take():
            pass
