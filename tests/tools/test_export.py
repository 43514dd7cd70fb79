import subprocess
import pytest
import sys

import lightning as L
import torch
from torch import nn

from deeptrain.cli import main as cli_main
from deeptrain.nn.mlp import MLPConfig
from deeptrain.training.module import Classifier

SHAPE = (1, 4, 4)

# Loads the program with deeptrain made unimportable: the file must stand on torch alone.
LOAD_WITHOUT_DEEPTRAIN = """
import sys, torch
sys.modules["deeptrain"] = None
model = torch.export.load(sys.argv[1]).module()
x = torch.load(sys.argv[2])
torch.save(model(x), sys.argv[3])
"""


def bn_checkpoint(path):
    torch.manual_seed(0)
    model = Classifier(MLPConfig(depth=2, width=8, norm="batch", input_norm=True, dropout=0.2),
                       input_shape=SHAPE, num_classes=3)
    model.normalizer.set_stats(torch.full(SHAPE, 120.0), torch.full(SHAPE, 50.0))
    with torch.no_grad():  # running statistics away from their initial 0/1
        model.train()(torch.randint(0, 256, (64, *SHAPE), dtype=torch.uint8) // 2)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path, weights_only=True)
    return model.eval()


@pytest.mark.slow
def test_export_fuses_bn_and_runs_without_deeptrain(tmp_path, capsys):
    model = bn_checkpoint(tmp_path / "m.ckpt")
    out = tmp_path / "model.pt2"
    cli_main(["export", "--ckpt_path", str(tmp_path / "m.ckpt"), "--fuse_bn", "true", "--softmax", "true", "--out", str(out)])
    assert "BatchNorm fused" in capsys.readouterr().out

    program = torch.export.load(out)
    assert not any("norm" in name and "running" in name for name in program.state_dict)  # no BN buffers
    x = torch.randint(0, 256, (5, *SHAPE), dtype=torch.uint8)
    torch.save(x, tmp_path / "x.pt")
    subprocess.run([sys.executable, "-c", LOAD_WITHOUT_DEEPTRAIN, str(out), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                   check=True, cwd=tmp_path)
    with torch.no_grad():
        expected = model(x).softmax(-1)
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), expected, rtol=1e-5, atol=1e-6)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in program.module().modules())


def test_a_missing_or_truncated_checkpoint_is_a_one_line_error(tmp_path, capsys):
    bn_checkpoint(tmp_path / "m.ckpt")
    truncated = tmp_path / "t.ckpt"
    truncated.write_bytes((tmp_path / "m.ckpt").read_bytes()[:2000])
    for path, message in ((tmp_path / "missing.ckpt", "no checkpoint at"), (truncated, "cannot be read")):
        with pytest.raises(SystemExit) as exit:
            cli_main(["export", "--ckpt_path", str(path)])
        err = capsys.readouterr().err
        assert exit.value.code == 1 and err.count("\n") == 1 and message in err and str(path) in err


@pytest.mark.parametrize("dtype, atol", [("bfloat16", 0.02), ("float16", 0.002)])
def test_low_precision_export_agrees_with_float32(tmp_path, dtype, atol):
    model = bn_checkpoint(tmp_path / "m.ckpt")
    out = cli_main(["export", "--ckpt_path", str(tmp_path / "m.ckpt"), "--softmax", "true", "--dtype", dtype,
                    "--out", str(tmp_path / f"{dtype}.pt2")])
    program = torch.export.load(out).module()
    assert {p.dtype for p in program.parameters()} == {getattr(torch, dtype)}
    x = torch.randint(0, 256, (512, *SHAPE), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = model(x).softmax(-1), program(x)
    assert got.dtype == torch.float32
    assert (got - expected).abs().max() < atol  # and not equal: the weights really are in low precision
    assert (got - expected).abs().max() > 0
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() > 0.97
