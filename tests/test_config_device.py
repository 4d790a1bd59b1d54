import contextlib

import pytest
import torch

from course_lib import config, device


def test_fast_mode_precedence(monkeypatch):
    """An explicit value wins, then COURSE_FAST, then 'no GPU means FAST'."""
    monkeypatch.setenv("COURSE_FAST", "0")
    assert config.fast_mode(True) is True
    assert config.fast_mode() is False
    monkeypatch.setenv("COURSE_FAST", "yes")
    assert config.fast_mode() is True
    assert config.fast_mode(False) is False
    monkeypatch.delenv("COURSE_FAST")
    assert config.fast_mode() is (not torch.cuda.is_available())


def test_fast_mode_rejects_garbage(monkeypatch):
    """An unreadable COURSE_FAST is an error that names the variable."""
    monkeypatch.setenv("COURSE_FAST", "maybe")
    with pytest.raises(ValueError, match="COURSE_FAST"):
        config.fast_mode()


def test_progress_quiet_in_ci(monkeypatch):
    """Progress bars are off under CI and in FAST mode, on in full mode elsewhere."""
    monkeypatch.delenv("COURSE_QUIET", raising=False)
    monkeypatch.setenv("CI", "true")
    assert not config.show_progress(fast=False)
    monkeypatch.setenv("CI", "0")
    assert config.show_progress(fast=False)
    assert not config.show_progress(fast=True)


def test_setup_fast_drives_the_progress_bars(monkeypatch):
    """device.setup(fast=...) is what a notebook says; progress bars follow it, not COURSE_FAST."""
    monkeypatch.delenv("COURSE_QUIET", raising=False)
    monkeypatch.setenv("CI", "0")
    monkeypatch.setenv("COURSE_FAST", "1")
    device.setup(0, device="cpu", fast=False, verbose=False)
    assert config.fast_mode() is False and config.show_progress()
    device.setup(0, device="cpu", fast=True, verbose=False)
    assert config.fast_mode() is True and not config.show_progress()
    config.set_fast(None)
    assert config.fast_mode() is True  # back to COURSE_FAST


def test_derive_seed_deterministic_and_distinct():
    """Seeds derived from parts are reproducible, distinct and in range."""
    a = config.derive_seed(0, 1, 2)
    assert a == config.derive_seed(0, 1, 2)
    seeds = {config.derive_seed(0, s, r) for s in range(20) for r in range(5)}
    assert len(seeds) == 100
    assert all(0 <= s < 2**63 for s in seeds)
    assert config.derive_seed(0, 1, 2) != config.derive_seed(0, 2, 1)


def test_seed_everything():
    """Same seed, same draws; negative seeds are refused."""
    config.seed_everything(3)
    a = torch.rand(4)
    config.seed_everything(3)
    assert torch.equal(a, torch.rand(4))
    with pytest.raises(ValueError, match="seed"):
        config.seed_everything(-1)


def test_device_choice_and_banner():
    """CPU is always available; asking for a missing CUDA is a clear error; the banner says it all."""
    assert device.get_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            device.get_device("cuda")
        assert device.get_device().type in ("cpu", "mps")
    line = device.banner(torch.device("cpu"), seed=7, fast=True)
    assert "cpu" in line and "seed 7" in line and "FAST" in line and torch.__version__ in line
    assert "\n" not in line


def test_autocast_and_place_on_cpu():
    """On the CPU autocast is a no-op and place keeps the memory format."""
    assert isinstance(device.autocast(torch.device("cpu")), contextlib.nullcontext)
    m = device.place(torch.nn.Conv2d(1, 2, 3), torch.device("cpu"))
    assert m.weight.device.type == "cpu" and m.weight.is_contiguous()


def test_setup_prints_banner_and_seeds(capsys):
    """setup() seeds the global stream, returns the device and prints one banner line."""
    dev = device.setup(11, device="cpu", fast=True)
    a = torch.rand(3)
    out = capsys.readouterr().out.strip().splitlines()
    assert dev.type == "cpu" and len(out) == 1 and "seed 11" in out[0] and "FAST mode" in out[0]
    device.setup(11, device="cpu", verbose=False)
    assert torch.equal(a, torch.rand(3))
    assert capsys.readouterr().out == ""
    assert torch.are_deterministic_algorithms_enabled()


def test_exact_numerics_uses_one_cpu_thread_and_restores():
    """Inside exact_numerics the CPU runs one thread; afterwards the old count is back, even on error."""
    old = torch.get_num_threads()
    with device.exact_numerics("cpu"):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == old
    with pytest.raises(RuntimeError):
        with device.exact_numerics(torch.device("cpu")):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == old
    import os
    assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") in (":4096:8", ":16:8")
