"""Both train scripts end to end, as a user runs them: bad input, resume, SIGKILL, two processes, NaN.

Every run uses micro models (32x32 frames, width 32) so a step takes milliseconds;
the cost is the interpreter start, so runs that need their own process share
fixtures where they can.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from conftest import MICRO_TOKENIZER, REPO
from runs import (
    ACCELERATE,
    MICRO_WORLD,
    PYTHON,
    TOKENIZER_CONFIG,
    WORLD_CONFIG,
    assert_ok,
    assert_user_error,
    losses,
    refused_in_process,
    run_script,
    train_tokenizer,
    train_world,
)
from tokenizer.model import WEIGHTS_FILE
from tokenizer.runtime.run_folder import LOSS_LOG


def metrics(output_dir: Path) -> dict:
    return json.loads((output_dir / "metrics.json").read_text())


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time, to prove nothing was touched."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tokenizer_run(tmp_path_factory) -> Path:
    """A finished 6-step micro tokenizer run (checkpoints at 3 and 6)."""
    out = tmp_path_factory.mktemp("runs") / "tokenizer"
    result = train_tokenizer(out, "train.max_steps=6", "train.checkpoint_every=3")
    assert_ok(result)
    assert "training tokenizer on cpu (fp32), 1 process, effective batch 4" in result.stdout
    (out.parent / "tokenizer_stdout.txt").write_text(result.stdout)
    return out


def test_tokenizer_run_writes_its_folder_and_reports_both_losses(tokenizer_run):
    for name in (
        "config.yaml",
        "metrics.json",
        "final/config.yaml",
        "checkpoints/step_000006/state.json",
        "checkpoints/step_000003/state.json",
    ):
        assert (tokenizer_run / name).exists(), name
    record = metrics(tokenizer_run)
    assert record["step"] == 6 and record["num_processes"] == 1
    # The tiny run is too short to learn, but every loss is measured and printed.
    assert record["tokenizer_loss"] > 0 and record["copy_previous_loss"] > 0 and record["shuffled_token_loss"] > 0
    own, shuffled, copy = record["tokenizer_loss"], record["shuffled_token_loss"], record["copy_previous_loss"]
    printed = (tokenizer_run.parent / "tokenizer_stdout.txt").read_text()
    if own < copy:
        assert record["token_usage"] == pytest.approx((shuffled - own) / (copy - own))
        assert f"token usage {record['token_usage']:.2f}" in printed
    else:  # no gain over copying to attribute: undefined, written as null
        assert record["token_usage"] is None and "token usage nan" in printed
    # Six steps cannot teach the decoder to read its token: the run ends with the loud warning.
    assert "warning: token usage is" in printed
    assert sorted(losses(tokenizer_run)) == [1, 2, 3, 4, 5, 6]


def test_same_seed_same_weights(tokenizer_run, tmp_path):
    again = tmp_path / "again"
    assert_ok(train_tokenizer(again, "train.max_steps=6", "train.checkpoint_every=3"))
    first = load_file(str(tokenizer_run / "checkpoints/step_000006/model.safetensors"))
    second = load_file(str(again / "checkpoints/step_000006/model.safetensors"))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert losses(tokenizer_run) == losses(again)


def test_a_feature_pool_holding_every_drawn_clip_trains_as_fresh_clips_do(tokenizer_run, tmp_path):
    # 6 steps of 4 clips draw clips 0-23; a pool of exactly those serves the same features, computed once.
    pooled = tmp_path / "pooled"
    assert_ok(train_tokenizer(pooled, "train.max_steps=6", "train.checkpoint_every=3", "feature_pool=24"))
    assert losses(pooled) == pytest.approx(losses(tokenizer_run), rel=1e-5, abs=1e-7)


def test_sigkill_after_a_checkpoint_then_resume_matches_the_uninterrupted_run(tokenizer_run, tmp_path):
    out = tmp_path / "killed"
    command = [PYTHON, "train_tokenizer.py", "--config", TOKENIZER_CONFIG, *MICRO_TOKENIZER, f"output_dir={out}",
               "train.max_steps=100000", "train.checkpoint_every=3"]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoints" / "step_000003" / "state.json").exists():
            assert process.poll() is None and time.monotonic() < deadline, "the run died or wrote no checkpoint"
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    # A crash mid-write leaves a damaged newest checkpoint: it must be skipped for the one before.
    damaged = out / "checkpoints" / "step_000099"
    damaged.mkdir()
    (damaged / "model.safetensors").write_bytes(b"\0" * 10)

    result = train_tokenizer(out, "train.max_steps=6", "train.checkpoint_every=3", "resume=true")
    assert_ok(result)
    resumed_from = int(result.stdout.split("resuming from ")[1].split(" at step ")[1].split()[0])
    assert 3 <= resumed_from < 6, result.stdout
    assert "skipping incomplete or damaged checkpoint" in result.stderr and "step_000099" in result.stderr
    # Step count, optimizer, schedule and random stream all continue: the curve is the uninterrupted one.
    assert losses(out) == pytest.approx(losses(tokenizer_run), rel=1e-5, abs=1e-7)
    assert metrics(out)["step"] == 6
    resumed = load_file(str(out / "checkpoints/step_000006/model.safetensors"))
    straight = load_file(str(tokenizer_run / "checkpoints/step_000006/model.safetensors"))
    assert all(torch.allclose(resumed[k], straight[k], rtol=1e-5, atol=1e-7) for k in straight)


def test_an_output_dir_holding_a_run_is_refused_and_left_untouched(tokenizer_run):
    before = snapshot(tokenizer_run)
    assert_user_error(
        train_tokenizer(tokenizer_run, "train.max_steps=2"), "holds another run", "resume=true", "overwrite=true"
    )
    assert snapshot(tokenizer_run) == before


@pytest.mark.parametrize(
    "overrides, fragments",
    [
        (["train.max_step=3"], ["unknown", "train.max_step", "did you mean 'train.max_steps'"]),
        (["data.frame_size=30"], ["30", "patch"]),
        (["train.lr=fast"], ["train.lr"]),
        (["resume=true", "overwrite=true"], ["contradict"]),
        (["train.effective_batch_size=6"], ["not a multiple"]),
        (["train.effective_batch_size=0"], ["train.effective_batch_size", "at least 1, or null"]),
        (["train.threads=0"], ["train.threads", "at least 1, or null"]),
        (["train.optimizer=adam"], ["train.optimizer", "adamw, muon"]),
        (["train.lr_schedule=cosin"], ["train.lr_schedule", "constant, cosine"]),
        (["train.ema_decay=1.0"], ["train.ema_decay", "[0, 1)"]),
        (["train.optimizer=sgd", "feature_pool=8"], ["train.optimizer"]),
        (
            ["resume=true", "init_from=runs/elsewhere/final"],
            ["init_from=runs/elsewhere/final", "resume=true", "contradict"],
        ),
    ],
)
def test_bad_config_is_one_line_and_nothing_is_written(tmp_path, overrides, fragments):
    out = tmp_path / "run"
    assert_user_error(refused_in_process(out, "train.max_steps=2", *overrides), *fragments)
    assert not out.exists() or not any(out.iterdir())


def test_missing_or_broken_yaml(tmp_path):
    assert_user_error(run_script("train_tokenizer.py", "--config", str(tmp_path / "nope.yaml")), "does not exist")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train:\n  max_steps: [3\n")
    assert_user_error(run_script("train_world_model.py", "--config", str(broken)), "not valid YAML", str(broken))


def test_non_finite_loss_stops_at_that_step_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "diverged"
    # AdamW moves each weight by about lr per step, so lr 1e30 makes the second step's loss non-finite.
    result = train_tokenizer(
        out, "train.max_steps=10", "train.checkpoint_every=1", "train.lr=1e30", "train.grad_clip=0"
    )
    error = assert_user_error(result, "non-finite at step", "last good checkpoint")
    bad_step = int(error.split("non-finite at step ")[1].split()[0])
    kept = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert kept and kept[-1] == f"step_{bad_step:06d}", (kept, error)
    assert not (out / "final").exists()
    weights = load_file(str(out / "checkpoints" / kept[-1] / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_world_model_trains_and_resumes_and_refuses_another_shape(tokenizer_run, tmp_path):
    out = tmp_path / "world"
    tokenizer = tokenizer_run / "final"
    assert_ok(train_world(out, tokenizer, "train.max_steps=2", "train.checkpoint_every=2"))
    result = train_world(out, tokenizer, "train.max_steps=4", "train.checkpoint_every=2", "resume=true")
    assert_ok(result)
    assert "resuming from" in result.stdout and "at step 2" in result.stdout
    assert sorted(losses(out)) == [1, 2, 3, 4]
    record = metrics(out)
    assert record["step"] == 4 and record["world_best_loss"] > 0 and record["copy_last_loss"] > 0
    assert (out / "final" / "world_model.safetensors").is_file()

    # Resuming with another model shape would load mismatched weights: refused, naming the key.
    before = snapshot(out)
    changed = train_world(out, tokenizer, "train.max_steps=6", "resume=true", "model.predictor.num_layers=2")
    assert_user_error(changed, "model.predictor.num_layers: 1 -> 2")
    assert snapshot(out) == before


def test_world_model_refuses_a_damaged_or_mismatched_tokenizer(tokenizer_run, tmp_path):
    damaged = tmp_path / "tokenizer"
    damaged.mkdir()
    for file in (tokenizer_run / "final").iterdir():
        data = file.read_bytes()
        (damaged / file.name).write_bytes(data[: len(data) // 2] if file.suffix == ".safetensors" else data)
    assert_user_error(train_world(tmp_path / "w1", damaged), str(damaged))
    # A tokenizer file read with the wrong architecture config names the mismatched keys and shapes.
    weights = tokenizer_run / "final" / WEIGHTS_FILE
    result = train_world(
        tmp_path / "w2",
        weights,
        "tokenizer.model.num_layers=2",
        *[o.replace("backbone.", "tokenizer.backbone.") for o in MICRO_TOKENIZER[:5]],
    )
    assert_user_error(result, "does not fit the model", "missing keys", "decoder_blocks.1.")
    assert not (tmp_path / "w1").exists() and not (tmp_path / "w2").exists()


def step_one_weights(output_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(output_dir / "checkpoints/step_000001/model.safetensors"))


def assert_same_weights(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected), [
        k for k in expected if not torch.equal(got[k], expected[k])
    ]


# With warmup the LR of step 0 is 0, so the weights after step 1 are those the run started from, bit for bit:
# a stage-2 run that restarted its schedule holds its init_from's weights there.
RESTARTED_SCHEDULE = ["train.warmup_steps=2", "train.checkpoint_every=1"]


def test_init_from_of_another_shape_is_refused_naming_the_keys(tokenizer_run, tmp_path):
    out = tmp_path / "run"
    result = train_tokenizer(out, f"init_from={tokenizer_run / 'final'}", "model.num_layers=2")
    assert_user_error(
        result, f"init_from {tokenizer_run / 'final'}", "does not fit the model", "missing keys", "decoder_blocks.1."
    )
    assert not out.exists()


def test_init_from_the_output_dirs_own_run_reads_it_before_overwriting(tokenizer_run, tmp_path):
    own = tmp_path / "own"
    shutil.copytree(tokenizer_run, own)
    weights = load_file(str(own / "final" / WEIGHTS_FILE))
    # overwrite=true deletes final/ only after its weights were read.
    assert_ok(
        train_tokenizer(own, f"init_from={own / 'final'}", "overwrite=true", "train.max_steps=1", *RESTARTED_SCHEDULE)
    )
    assert_same_weights(step_one_weights(own), weights)


def test_world_model_init_from_starts_from_a_trained_world_model(tokenizer_run, tmp_path):
    tokenizer, stage1, stage2 = tokenizer_run / "final", tmp_path / "stage1", tmp_path / "stage2"
    assert_ok(train_world(stage1, tokenizer, "train.max_steps=2"))
    result = train_world(
        stage2,
        tokenizer,
        f"init_from={stage1 / 'final'}",
        "data.frame_size=64",
        "train.max_steps=1",
        *RESTARTED_SCHEDULE,
    )
    assert_ok(result)
    assert f"steps 0 -> 1, from the weights of init_from={stage1 / 'final'}" in result.stdout
    assert_same_weights(step_one_weights(stage2), load_file(str(stage1 / "final" / "world_model.safetensors")))
    assert [json.loads(line)["lr"] for line in (stage2 / LOSS_LOG).read_text().splitlines()] == [0.0]
    assert OmegaConf.load(stage2 / "config.yaml").init_from == str(stage1 / "final")

    # A bare predictor file, as released, holds no readout: a run that trains one starts it fresh.
    readout = tmp_path / "readout"
    micro_readout = [
        o.replace("model.predictor.", "model.readout.predictor.")
        for o in MICRO_WORLD
        if o.startswith("model.predictor.")
    ]
    bare = stage1 / "final" / "world_model.safetensors"
    result = train_world(
        readout,
        tokenizer,
        f"init_from={bare}",
        "model.readout.enabled=true",
        *micro_readout,
        "train.max_steps=1",
        *RESTARTED_SCHEDULE,
    )
    assert_ok(result)
    assert "holds no readout: the readout starts from its own initialisation" in result.stderr
    started = step_one_weights(readout)
    assert any(k.startswith("readout.") for k in started)
    assert_same_weights(
        {k.removeprefix("objective."): v for k, v in started.items() if k.startswith("objective.")},
        load_file(str(bare)),
    )

    other = tmp_path / "other"
    result = train_world(other, tokenizer, f"init_from={stage1 / 'final'}", "model.predictor.num_layers=2")
    assert_user_error(result, str(stage1 / "final"), "does not fit the model", "missing keys", "predictor.blocks.1.")
    assert not other.exists()


def readme_command(marker: str) -> list[str]:
    """The words of the command in README.md's bash blocks that holds `marker`, continuation lines joined."""
    for block in re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if marker in line:
                return shlex.split(line, comments=True)
    pytest.fail(f"README.md holds no command with {marker}")


def test_readmes_recipe_stages_run_as_written_at_micro_size(tmp_path):
    """The paper's tokenizer recipe: stage 1, stage 2 from its final/ at another size, a cooldown resuming stage 2."""
    stage1, stage2 = tmp_path / "stage1", tmp_path / "stage2"
    stage2_words = readme_command("init_from=runs/deltatok_stage1/final")
    config = stage2_words[stage2_words.index("--config") + 1]
    # The recipe's config with micro sizes, offline: only README's key names are under test, not its sizes.
    # The recipe's encoder reads whole frames, so it keeps every patch (no encoder_top_k).
    micro = [*(o for o in MICRO_TOKENIZER if not o.startswith("model.encoder_top_k=")),
             "backbone.name=random-init-dinov3", "data.source=shapes", "data.val_source=shapes",
             "train.effective_batch_size=null", "train.num_workers=0", "train.val_every=0",
             "train.checkpoint_every=1"]  # fmt: skip
    micro_values = {
        "init_from": str(stage1 / "final"),
        "output_dir": str(stage2),
        "data.frame_size": "64",
        "train.batch_size": "4",
        "train.max_steps": "2",
    }

    def overrides(words: list[str]) -> dict[str, str]:
        return dict(word.split("=", 1) for word in words[words.index("train_tokenizer.py") + 1 :] if "=" in word)

    def at_micro_size(words: list[str]) -> list[str]:
        return [f"{key}={micro_values.get(key, value)}" for key, value in overrides(words).items()]

    assert_ok(run_script("train_tokenizer.py", "--config", config, *micro, f"output_dir={stage1}", "train.max_steps=1"))
    result = run_script("train_tokenizer.py", "--config", config, *micro, *at_micro_size(stage2_words))
    assert_ok(result)
    assert f"steps 0 -> 2, from the weights of init_from={stage1 / 'final'}" in result.stdout
    # The recipe's warmup holds the LR at 0 for step 0: step 1 keeps stage 1's final weights, and the schedule
    # restarted (stage 1 ended with a non-zero LR).
    assert_same_weights(step_one_weights(stage2), load_file(str(stage1 / "final" / WEIGHTS_FILE)))
    log = [json.loads(line) for line in (stage2 / LOSS_LOG).read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and log[0]["lr"] == 0.0 < log[1]["lr"]
    saved = OmegaConf.load(stage2 / "config.yaml")
    assert saved.init_from == str(stage1 / "final") and saved.data.frame_size == 64

    cooldown = readme_command("resume=true train.lr=1e-5")
    assert (
        cooldown[cooldown.index("--config") + 1] == f"{overrides(stage2_words)['output_dir']}/config.yaml"
    )  # stage 2's run
    micro_values["train.max_steps"] = "3"
    result = run_script("train_tokenizer.py", "--config", str(stage2 / "config.yaml"), *at_micro_size(cooldown))
    # A run started from init_from, resumed with its saved config.yaml (which records init_from): its checkpoint wins.
    assert_ok(result)
    assert "at step 2" in result.stdout and "from the weights of" not in result.stdout
    assert sorted(losses(stage2)) == [1, 2, 3] and metrics(stage2)["step"] == 3


@pytest.mark.parametrize("script", ["train_tokenizer.py", "train_world_model.py"])
def test_two_processes_agree_on_weights(tokenizer_run, tmp_path, script):
    out = tmp_path / "ddp"
    overrides = (
        MICRO_TOKENIZER
        if script == "train_tokenizer.py"
        else MICRO_WORLD + [f"tokenizer.checkpoint={tokenizer_run / 'final'}"]
    )
    config = TOKENIZER_CONFIG if script == "train_tokenizer.py" else WORLD_CONFIG
    # Without GPUs, --multi_gpu starts two gloo processes on the CPU (--cpu would start only one).
    command = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no",
               script, "--config", config, *overrides, "train.max_steps=3", f"output_dir={out}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180, env=env)
    assert_ok(result)
    assert "2 processes, effective batch 8 = 4 per process x 2 x 1" in result.stdout
    assert "all 2 processes hold identical weights" in result.stdout
    record = metrics(out)
    assert record["num_processes"] == 2 and record["ranks_agree"] is True and record["step"] == 3
    # Only the main process writes: one loss record per step, one final folder.
    assert sorted(losses(out)) == [1, 2, 3]
