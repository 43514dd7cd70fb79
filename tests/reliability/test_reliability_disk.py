"""A full or read-only disk ends in one ``error:`` line naming the file and the fix; the
checkpoint written before stays intact, so the fit resumes from it."""

from __future__ import annotations

import errno

import pytest
import torch
from reliability_helpers import tiny_config

from deeptrain.cli import main
from deeptrain.data.image_folder import load_split
from deeptrain.training import checkpoint_io
from deeptrain.training.checkpoint_io import TMP_MARK, storage_error_message

REFUSALS = {errno.ENOSPC: "No space left on device", errno.EROFS: "Read-only file system"}


def refuse_checkpoints_after(monkeypatch, saves: int, code: int) -> list[str]:
    """``torch.save`` into a checkpoint's temporary file fails with ``code`` after ``saves`` successful ones,
    as writing to a disk that just filled up (or was remounted read-only) does."""
    real_save, done = torch.save, []

    def save(obj, f, *args, **kwargs):
        name = str(getattr(f, "name", f))
        if TMP_MARK in name:
            if len(done) >= saves:
                raise OSError(code, REFUSALS[code])  # write(2) gives no file name
            done.append(name)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint_io.torch, "save", save)
    return done


@pytest.mark.parametrize("code", list(REFUSALS))
def test_a_refused_checkpoint_write_is_one_line_naming_the_file_and_the_last_checkpoint_survives(
        code, tiny_images, tmp_path, capsys, monkeypatch):
    done = refuse_checkpoints_after(monkeypatch, saves=1, code=code)
    with pytest.raises(SystemExit) as stop:  # the second save of last.ckpt (step 6) fails
        main(["fit", "--config", str(tiny_config(tmp_path, tiny_images, every_n_train_steps=3))])
    err = capsys.readouterr().err
    assert stop.value.code == 1 and "Traceback" not in err
    (last,) = tmp_path.glob("logs/tiny/version_0/checkpoints/last.ckpt")
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: cannot write {last}: {REFUSALS[code]}; ")
    assert "--trainer.default_root_dir" in line and "--ckpt_path last" in line
    assert len(done) == 1 and torch.load(last, weights_only=False)["global_step"] == 3  # the step-3 save, intact
    assert not list(last.parent.glob(f"*{TMP_MARK}*"))  # no temporary left behind


@pytest.mark.parametrize("err, start", [
    (PermissionError(errno.EACCES, "Permission denied", "/runs/logs"),
     "cannot write /runs/logs: Permission denied; give this user write access, or write elsewhere"),
    (OSError(errno.ENOSPC, "No space left on device"),
     "cannot write (a log or checkpoint file): No space left on device; free some space there"),
])
def test_storage_errors_get_one_line_and_others_none(err, start):
    assert storage_error_message(err).startswith(start)
    wrapped = RuntimeError("writer failed")
    wrapped.__cause__ = err
    assert storage_error_message(wrapped) == storage_error_message(err)  # found along the chain
    assert storage_error_message(FileNotFoundError(errno.ENOENT, "No such file", "x.ckpt")) is None
    assert storage_error_message(ValueError("bad")) is None


def test_an_image_cache_that_cannot_be_written_is_a_warning_not_an_error(tiny_images, tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(torch, "save", full)
    with pytest.warns(UserWarning, match="could not cache the decoded images in .*next run decodes them again"):
        split = load_split(tiny_images / "train", ["c0", "c1", "c2"], cache_dir=tmp_path / "cache")
    assert split.images.shape == (96, 1, 4, 4) and len(split.labels) == 96 and len(split.files) == 96
