import torch

from probity.models import Checkpointer


def test_checkpoint_roundtrip_keeps_newest(tmp_path):
    ckpt = Checkpointer(tmp_path / "ck", keep=2)
    assert ckpt.latest() is None
    for step in (1, 2, 3):
        ckpt.save(step, {"w": torch.full((3,), float(step)), "done": list(range(step))})
    step, state = ckpt.latest()
    assert step == 3 and state["done"] == [0, 1, 2]
    torch.testing.assert_close(state["w"], torch.full((3,), 3.0))
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["step-00000002.pt", "step-00000003.pt"]


def test_torn_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    ckpt = Checkpointer(tmp_path)
    ckpt.save(1, {"x": 1})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", killed)
    try:
        ckpt.save(2, {"x": 2})
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    assert ckpt.latest() == (1, {"x": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000001.pt"]  # no temp file left
