"""Energy attribution by hand: one call, overlapping calls, failed reads; and the host's counters."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from broker.energy import DeviceEnergy, RaplCounter, open_counter
from broker.energy.counters import CounterUnavailable, NvmlCounter


class Steps:
    """A fake counter (+10 J a read) and a fake clock (+1 s a read): every boundary is hand-computable."""

    def __init__(self, joules_per_read: float = 10.0) -> None:
        self.name = "fake:0"
        self.j, self.t, self.step = 0.0, 0.0, joules_per_read
        self.fail_next = False

    def read_j(self) -> float:
        if self.fail_next:
            self.fail_next = False
            raise OSError("counter gone")
        self.j += self.step
        return self.j

    def clock(self) -> float:
        self.t += 1.0
        return self.t

    def close(self) -> None:
        pass


def device() -> tuple[DeviceEnergy, Steps]:
    steps = Steps()
    return DeviceEnergy(steps, clock=steps.clock), steps


def by_key(shares: list) -> dict:
    return {s.key: (pytest.approx(s.joules), s.attributed) for s in shares}


def test_one_call_alone_gets_the_whole_reading() -> None:
    dev, _ = device()
    dev.begin("a")                                   # t=1, 10 J
    assert by_key(dev.end("a", 50)) == {"a": (10.0, False)}   # t=2, 20 J
    # idle energy between calls is nobody's
    dev.begin("b")                                   # t=3, 30 J
    assert by_key(dev.end("b", 0)) == {"b": (10.0, False)}
    assert dev.pending == 0


def test_overlapping_calls_share_each_interval_by_tokens_generated_in_it() -> None:
    dev, _ = device()
    dev.begin("a")                                   # t=1  E=10
    dev.begin("b")                                   # t=2  E=20   [1,2]: a alone, 10 J
    assert dev.end("b", 5) == []                     # t=3  E=30   [2,3]: a and b, 10 J; a still running
    shares = by_key(dev.end("a", 30))                # t=4  E=40   [3,4]: a alone, 10 J
    # a: 30 tokens over 3 s (10/s), b: 5 tokens over 1 s (5/s); in [2,3] a made 10 tokens, b 5
    assert shares == {"a": (10 + 10 * 10 / 15 + 10, True), "b": (10 * 5 / 15, True)}
    assert sum(s[0].expected for s in shares.values()) == pytest.approx(30.0)  # all measured energy, no more


def test_a_chain_of_overlaps_settles_each_call_once_its_neighbours_end() -> None:
    dev, _ = device()
    dev.begin("a")                                   # t=1 E=10
    dev.begin("b")                                   # t=2 E=20  [1,2] a
    assert dev.end("a", 20) == []                    # t=3 E=30  [2,3] a,b   (b still running)
    dev.begin("c")                                   # t=4 E=40  [3,4] b
    first = by_key(dev.end("b", 30))                 # t=5 E=50  [4,5] b,c   (c still running)
    # a: 20 tokens / 2 s = 10/s; b: 30 tokens / 3 s = 10/s: [2,3] split evenly
    assert first == {"a": (10 + 5, True)}
    second = by_key(dev.end("c", 10))                # t=6 E=60  [5,6] c
    # c: 10 tokens / 2 s = 5/s; [4,5]: b 10/s, c 5/s
    assert second == {"b": (5 + 10 + 10 * 10 / 15, True), "c": (10 * 5 / 15 + 10, True)}
    assert dev.pending == 0


def test_an_interval_where_no_call_generated_tokens_is_shared_equally() -> None:
    dev, _ = device()
    dev.begin("a")
    dev.begin("b")
    assert dev.end("a", 0) == []
    shares = by_key(dev.end("b", 0))
    assert shares == {"a": (10.0 + 5.0, True), "b": (5.0 + 10.0, True)}


def test_a_failed_read_leaves_the_calls_it_touches_without_a_figure() -> None:
    dev, steps = device()
    dev.begin("a")
    steps.fail_next = True
    (share,) = dev.end("a", 10)
    assert share.joules is None
    dev.begin("b")                                   # the next call is measured again
    (share,) = dev.end("b", 10)
    assert share.joules == pytest.approx(10.0) and share.attributed is False


def _zone(root: Path, energy_uj: int, max_uj: int = 1_000_000) -> Path:
    zone = root / "intel-rapl:0"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return zone


def test_rapl_reads_microjoules_from_powercap_and_survives_a_wrap(tmp_path: Path) -> None:
    zone = _zone(tmp_path, 900_000)
    counter = RaplCounter(0, root=tmp_path)
    assert counter.name == "rapl:0" and counter.read_j() == pytest.approx(0.9)
    (zone / "energy_uj").write_text("950000\n")
    assert counter.read_j() == pytest.approx(0.95)
    (zone / "energy_uj").write_text("100000\n")           # wrapped at 1 J
    assert counter.read_j() == pytest.approx(1.1)


def test_no_readable_counter_means_none_and_says_why(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(CounterUnavailable):
        RaplCounter(0, root=tmp_path)
    _zone(tmp_path, 5)  # zone 0 only
    with caplog.at_level(logging.WARNING, logger="llama_broker.energy"):
        assert open_counter("rapl", 3, root=tmp_path) is None
    assert "rapl:3" in caplog.text


def test_nvml_without_a_driver_or_gpu_is_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    """On a host without the NVIDIA driver (as here) the real library refuses to start: nothing recorded."""
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this host has an NVIDIA driver")
    with pytest.raises(CounterUnavailable, match="NVML"):
        NvmlCounter(0)
    with caplog.at_level(logging.WARNING, logger="llama_broker.energy"):
        assert open_counter("auto", 0, root=Path("/nonexistent")) is None
    assert "NVML" in caplog.text and "RAPL" in caplog.text
