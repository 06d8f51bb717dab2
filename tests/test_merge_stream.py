"""The merge's streaming safetensors writer and windowed reader, against safetensors itself."""

from __future__ import annotations

import pytest


def test_shard_writer_files_read_back_as_safetensors_saves_them(tmp_path):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    from tuitune.merge.shards import ShardReader as _ShardReader, ShardWriter as _ShardWriter

    torch.manual_seed(0)
    tensors = {
        "a.weight": torch.randn(5, 3).to(torch.bfloat16),     # odd byte counts between wider dtypes
        "b.buffer": torch.arange(7, dtype=torch.int64),
        "c.scalar": torch.tensor(1.5, dtype=torch.float32),
        "d.mask": torch.tensor([True, False, True]),
        "e.weight": torch.randn(4, 4).to(torch.bfloat16),
    }
    st = {torch.bfloat16: "BF16", torch.int64: "I64", torch.float32: "F32", torch.bool: "BOOL"}
    w = _ShardWriter(tmp_path / "s.safetensors", [(k, st[t.dtype], list(t.shape)) for k, t in tensors.items()])
    for k in ["e.weight", "a.weight", "d.mask", "c.scalar", "b.buffer"]:   # any arrival order
        w.add(k, tensors[k])
    w.close()
    back = load_file(tmp_path / "s.safetensors")
    assert back.keys() == tensors.keys()
    for k, t in tensors.items():
        assert back[k].dtype == t.dtype and torch.equal(back[k], t), k
    with safe_open(str(tmp_path / "s.safetensors"), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
    # The reader gives the same tensors through a window smaller than one tensor (reopening each time).
    r = _ShardReader(tmp_path / "s.safetensors", window=8)
    assert all(torch.equal(r.get(k), t) for k, t in tensors.items())
    r.close()


def test_shard_writer_refuses_a_tensor_of_another_shape_and_a_shard_left_short(tmp_path):
    import torch

    from tuitune.merge.shards import ShardWriter as _ShardWriter

    w = _ShardWriter(tmp_path / "s.safetensors", [("a", "F32", [2, 2]), ("b", "F32", [3])])
    with pytest.raises(RuntimeError, match="planned"):
        w.add("a", torch.zeros(4))
    w.add("a", torch.zeros(2, 2))
    with pytest.raises(RuntimeError, match="never written"):
        w.close()


def test_the_warm_up_imports_are_waited_for_before_the_main_thread_imports(tmp_path, monkeypatch):
    """transformers' lazy module raced a second thread ("cannot import name 'AutoTokenizer'" in CI, in a
    real-model export): the merge's warm-up imports must be finished when ``imports_ready`` returns."""
    import sys
    import time

    from tuitune.merge.shards import import_in_background as _import_in_background, imports_ready

    (tmp_path / "slow_warm_module.py").write_text("import time\ntime.sleep(0.6)\nDONE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "slow_warm_module", raising=False)
    t0 = time.monotonic()
    _import_in_background(("slow_warm_module",))
    imports_ready()
    assert time.monotonic() - t0 >= 0.5
    assert sys.modules["slow_warm_module"].DONE
    imports_ready()   # nothing left to wait for
