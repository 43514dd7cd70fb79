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
    cli_main(["export", "--ckpt", str(tmp_path / "m.ckpt"), "--fuse-bn", "--softmax", "--out", str(out)])
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
