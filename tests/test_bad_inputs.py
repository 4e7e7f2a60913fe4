"""The standing bad-input table: every command, given a mistake, prints one `error:` line and exits 2, and leaves
every run, report and recording it was pointed at byte for byte as it was.

Each case runs the command's `main(argv)` in this process under `run_cli`, as the command line does. The runs,
recordings and reports a case may damage are made once per module and copied into each case's folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import rollout
import train_heads
import train_tokenizer
import train_world_model
from benchmarks import plan_bench, plan_diagnosis, task_draw
from conftest import MICRO_TOKENIZER, REPO, micro_predictor_config
from envs import recording
from envs.dream import DreamEnv
from runs import MICRO_WORLD, TOKENIZER_CONFIG, WORLD_CONFIG
from tokenizer.backbone import Backbone, BackboneConfig
from tokenizer.runtime import engine
from tokenizer.runtime.cli import run_cli
from tokenizer.runtime.files import replace_folder
from worldmodel.objectives import ActionSpace, ObjectiveConfig
from worldmodel.world import WorldModelConfig, build_world_model

TOKENIZER = ["--config", str(REPO / TOKENIZER_CONFIG), *MICRO_TOKENIZER, "train.max_steps=2", "output_dir={run}"]
WORLD = [
    "--config",
    str(REPO / WORLD_CONFIG),
    *MICRO_WORLD,
    "tokenizer.checkpoint={tok}",
    "train.max_steps=1",
    "output_dir={run}",
]
HEADS = [
    "--config",
    str(REPO / "configs/heads/tiny.yaml"),
    "tokenizer.checkpoint={tok}",
    "data.frame_size=32",
    "data.val_clips=2",
    "train.max_steps=1",
    "train.batch_size=2",
    "output_dir={run}",
]
ROLLOUT = [
    "--config",
    str(REPO / "configs/rollout/tiny.yaml"),
    "--tokenizer",
    "{tok}",
    "--world-models",
    "{world}",
    "--heads",
    "",
    "--frame-size",
    "32",
    "--context",
    "2",
    "--val-clips",
    "2",
    "--pictures",
    "0",
    "--device",
    "cpu",
    "--out",
    "{run}",
]
RECORD = [
    "--env",
    "deltaworld/Shapes-v0",
    "--episodes",
    "1",
    "--max-steps",
    "2",
    "--frame-size",
    "32",
    "--out",
    "{run}",
]
BENCH = ["out={run}"]

COMMANDS: dict[str, tuple[Callable[[list[str]], None], list[str]]] = {
    "tokenizer": (train_tokenizer.main, TOKENIZER),
    "world": (train_world_model.main, WORLD),
    "heads": (train_heads.main, HEADS),
    "rollout": (rollout.main, ROLLOUT),
    "record": (recording.main, RECORD),
    "bench": (plan_bench.main, BENCH),
    "diagnosis": (plan_diagnosis.main, ["--out", "{run}"]),
    "draw": (task_draw.main, []),
}


@dataclass
class Ran:
    status: int
    stdout: str
    stderr: str


def run(command: str, args: list[str], **names: Path) -> Ran:
    """`command` with its base arguments then `args`, each `{name}` filled in, as the command line runs it."""
    main, base = COMMANDS[command]
    argv = [a.format(**names) for a in [*base, *args]]
    stdout, stderr, status = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            run_cli(lambda: main(argv))
        except SystemExit as exit:
            status = exit.code
    return Ran(status, stdout.getvalue(), stderr.getvalue())


def checksums(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def micro_dinov3(folder: Path) -> Path:
    backbone = Backbone.random_init(
        BackboneConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, patch_size=8)
    )
    backbone.model.save_pretrained(folder)
    return folder


class RunsCode:
    """A pickle that would run code when loaded without weights_only."""

    def __reduce__(self):
        return (print, ("this ran",))


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """What the cases read or protect: a tokenizer run (checkpoints at steps 1 and 2), a world-model run, a
    recording of 4 episodes, heads with an RGB head, a report, a folder of notes and two damaged backbones."""
    root = tmp_path_factory.mktemp("made")
    paths = {name: root / name for name in ("tokenizer", "world", "recording", "heads", "report", "notes")}
    assert run("tokenizer", ["train.checkpoint_every=1"], run=paths["tokenizer"]).status == 0
    paths["tok"] = paths["tokenizer"] / "final"
    assert run("world", [], run=paths["world"], tok=paths["tok"]).status == 0
    paths["world_final"] = paths["world"] / "final"
    assert run("record", ["--episodes", "4"], run=paths["recording"]).status == 0
    for name in ("segmentation", "depth", "rgb"):
        (paths["heads"] / name).mkdir(parents=True)
        (paths["heads"] / name / "head.safetensors").write_bytes(name.encode())
    paths["report"].mkdir()
    (paths["report"] / "report.json").write_text('{"old": true}\n')
    paths["notes"].mkdir()
    (paths["notes"] / "notes.txt").write_text("mine\n")
    truncated = micro_dinov3(root / "backbone_truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    pickled = micro_dinov3(root / "backbone_pickle")
    (pickled / "model.safetensors").unlink()
    (pickled / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": RunsCode()}))
    paths["backbone_truncated"], paths["backbone_pickle"] = truncated, pickled
    (root / "a_file").write_text("not a folder\n")
    paths["file"] = root / "a_file"
    cycle_a, cycle_b = root / "cycle_a.yaml", root / "cycle_b.yaml"
    cycle_a.write_text(f"_base_: {cycle_b.name}\n")
    cycle_b.write_text(f"_base_: {cycle_a.name}\n")
    paths["cycle"] = cycle_a
    (root / "broken.yaml").write_text("train:\n  max_steps: [3\n")
    paths["broken"] = root / "broken.yaml"
    (root / "list.yaml").write_text("- 1\n- 2\n")
    paths["list_yaml"] = root / "list.yaml"
    return paths


def damage_checkpoints(run_dir: Path) -> None:
    for weights in (run_dir / "checkpoints").glob("step_*/model.safetensors"):
        with open(weights, "r+b") as handle:
            handle.truncate(1000)


def damage_tokenizer(run_dir: Path) -> None:
    weights = next((run_dir / "final").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])


# (id, command, arguments, fragments of the error line, folder of `made` copied to {run} (None: a new folder),
# what to do to the copy before the command)
CASES = [
    # config keys, values and files
    ("typo", "tokenizer", ["train.max_step=3"], ["train.max_step", "did you mean 'train.max_steps'"], None, None),
    ("wrong type", "tokenizer", ["train.lr=fast"], ["train.lr"], None, None),
    ("unknown section key", "tokenizer", ["model.nope=1"], ["model.nope"], None, None),
    ("stray word", "tokenizer", ["fast"], ["fast"], None, None),
    ("unknown flag", "tokenizer", ["--max-steps", "3"], ["--max-steps"], None, None),
    ("missing yaml", "tokenizer", ["--config", "{run}/nope.yaml"], ["nope.yaml", "does not exist"], None, None),
    ("broken yaml", "tokenizer", ["--config", "{broken}"], ["not valid YAML", "broken.yaml"], None, None),
    ("yaml not a mapping", "tokenizer", ["--config", "{list_yaml}"], ["list.yaml"], None, None),
    ("_base_ cycle", "tokenizer", ["--config", "{cycle}"], ["cycle_a.yaml", "_base_"], None, None),
    ("resume and overwrite", "tokenizer", ["resume=true", "overwrite=true"], ["contradict"], None, None),
    ("resume and init_from", "tokenizer", ["resume=true", "init_from=elsewhere/final"], ["contradict"], None, None),
    ("init_from missing", "tokenizer", ["init_from={run}/nowhere"], ["nowhere"], None, None),
    # the train section
    ("batch 0", "tokenizer", ["train.batch_size=0"], ["train.batch_size", "at least 1"], None, None),
    ("batch -4", "tokenizer", ["train.batch_size=-4"], ["train.batch_size", "at least 1"], None, None),
    ("batch huge", "tokenizer", ["train.batch_size=99999999999999999999"], ["train.batch_size", "GiB"], None, None),
    ("max_steps -3", "tokenizer", ["train.max_steps=-3"], ["train.max_steps", "at least 1"], None, None),
    ("log_every 0", "tokenizer", ["train.log_every=0"], ["train.log_every", "at least 1"], None, None),
    ("checkpoint_every 0", "tokenizer", ["train.checkpoint_every=0"], ["train.checkpoint_every"], None, None),
    ("keep_checkpoints 0", "tokenizer", ["train.keep_checkpoints=0"], ["train.keep_checkpoints"], None, None),
    ("warmup -1", "tokenizer", ["train.warmup_steps=-1"], ["train.warmup_steps"], None, None),
    ("val_every -1", "tokenizer", ["train.val_every=-1"], ["train.val_every"], None, None),
    ("num_workers -1", "tokenizer", ["train.num_workers=-1"], ["train.num_workers"], None, None),
    ("lr 0", "tokenizer", ["train.lr=0"], ["train.lr", "above 0"], None, None),
    ("lr inf", "tokenizer", ["train.lr=inf"], ["train.lr", "finite"], None, None),
    ("grad_clip -1", "tokenizer", ["train.grad_clip=-1"], ["train.grad_clip"], None, None),
    ("optimizer", "tokenizer", ["train.optimizer=adam"], ["train.optimizer", "adamw, muon"], None, None),
    ("lr schedule", "tokenizer", ["train.lr_schedule=cosin"], ["train.lr_schedule", "constant, cosine"], None, None),
    ("lr_decay_fraction", "tokenizer", ["train.lr_decay_fraction=0"], ["train.lr_decay_fraction"], None, None),
    ("ema_decay", "tokenizer", ["train.ema_decay=1.0"], ["train.ema_decay", "[0, 1)"], None, None),
    ("effective batch", "tokenizer", ["train.effective_batch_size=6"], ["not a multiple"], None, None),
    ("effective batch 0", "tokenizer", ["train.effective_batch_size=0"], ["train.effective_batch_size"], None, None),
    ("threads 0", "tokenizer", ["train.threads=0"], ["train.threads"], None, None),
    ("mixed precision", "tokenizer", ["train.mixed_precision=fp8"], ["train.mixed_precision"], None, None),
    ("attention backend", "tokenizer", ["train.attention_backend=flash"], ["flash"], None, None),
    ("lr_scale prefix", "tokenizer", ["train.lr_scale.nosuch=2"], ["train.lr_scale", "nosuch"], None, None),
    # data and model
    ("frame not patch multiple", "tokenizer", ["data.frame_size=30"], ["30", "patch"], None, None),
    ("frame 65536", "tokenizer", ["data.frame_size=65536"], ["data.frame_size", "GiB"], None, None),
    ("val_clips 0", "tokenizer", ["data.val_clips=0"], ["data.val_clips"], None, None),
    ("num_frames 0", "tokenizer", ["data.num_frames=0"], ["data.num_frames"], None, None),
    ("data source", "tokenizer", ["data.source=nosuch"], ["nosuch"], None, None),
    ("shapes strides", "tokenizer", ["data.shapes_strides=[]"], ["data.shapes_strides"], None, None),
    ("heads of the backbone", "tokenizer", ["backbone.num_heads=3"], ["backbone.num_heads"], None, None),
    ("backbone no config", "tokenizer", ["backbone.name={run}"], ["config.json"], "notes", None),
    ("backbone pickle", "tokenizer", ["backbone.name={backbone_pickle}"], ["backbone_pickle", "pickle"], None, None),
    ("backbone truncated", "tokenizer", ["backbone.name={backbone_truncated}"], ["backbone_truncated"], None, None),
    # the output folder
    ("output_dir a file", "tokenizer", ["output_dir={file}"], ["a_file", "is a file"], None, None),
    (
        "output_dir holds a run",
        "tokenizer",
        [],
        ["holds another run", "resume=true", "overwrite=true"],
        "tokenizer",
        None,
    ),
    ("output_dir holds notes", "tokenizer", [], ["notes.txt", "overwrite=true"], "notes", None),
    (
        "overwrite, bad checkpoint_every",
        "tokenizer",
        ["overwrite=true", "train.checkpoint_every=0"],
        ["train.checkpoint_every"],
        "tokenizer",
        None,
    ),
    (
        "overwrite, flash",
        "tokenizer",
        ["overwrite=true", "train.attention_backend=flash"],
        ["flash"],
        "tokenizer",
        None,
    ),
    ("overwrite, typo", "tokenizer", ["overwrite=true", "train.max_step=3"], ["train.max_step"], "tokenizer", None),
    ("overwrite, frame 65536", "tokenizer", ["overwrite=true", "data.frame_size=65536"], ["GiB"], "tokenizer", None),
    # resuming
    (
        "resume damaged",
        "tokenizer",
        ["resume=true"],
        ["no readable checkpoint", "model.safetensors", "overwrite=true"],
        "tokenizer",
        damage_checkpoints,
    ),
    (
        "resume other shape",
        "tokenizer",
        ["resume=true", "train.max_steps=4", "model.num_layers=2"],
        ["model.num_layers: 1 -> 2"],
        "tokenizer",
        None,
    ),
    (
        "resume a file",
        "tokenizer",
        ["resume=true", "output_dir={file}"],
        ["a_file", "is a file"],
        None,
        None,
    ),
    (
        "resume past max_steps",
        "tokenizer",
        ["resume=true", "train.max_steps=1"],
        ["past train.max_steps"],
        "tokenizer",
        None,
    ),
    # the world model
    ("world batch -2", "world", ["train.batch_size=-2"], ["train.batch_size"], None, None),
    (
        "world overwrite batch -2",
        "world",
        ["overwrite=true", "train.batch_size=-2"],
        ["train.batch_size"],
        "world",
        None,
    ),
    ("world holds a run", "world", [], ["holds another run"], "world", None),
    ("world tokenizer missing", "world", ["tokenizer.checkpoint={run}/nowhere"], ["nowhere"], None, None),
    (
        "world tokenizer damaged",
        "world",
        ["tokenizer.checkpoint={run}/final"],
        ["final"],
        "tokenizer",
        damage_tokenizer,
    ),
    ("world hub id offline", "world", ["tokenizer.checkpoint=Amazon-FAR/not-downloaded"], ["hf download"], None, None),
    ("world malformed hub id", "world", ["tokenizer.checkpoint=Amazon-FAR/a/b/c"], ["Amazon-FAR/a/b/c"], None, None),
    ("world num_samples 0", "world", ["model.num_samples=0"], ["num_samples"], None, None),
    # heads
    ("heads held", "heads", [], ["already holds", "overwrite=true"], "heads", None),
    ("heads a file", "heads", ["output_dir={file}"], ["is a file"], None, None),
    ("heads steps 0", "heads", ["train.max_steps=0"], ["train.max_steps"], None, None),
    (
        "heads none",
        "heads",
        ["model.segmentation=false", "model.depth=false", "model.rgb=false"],
        ["nothing to train"],
        None,
        None,
    ),
    ("heads classes 0", "heads", ["model.num_classes=0"], ["model.num_classes"], None, None),
    ("heads old key", "heads", ["heads.steps=3"], ["train.max_steps"], None, None),
    # rollout
    ("rollout report held", "rollout", [], ["already holds", "report.json", "overwrite=true"], "report", None),
    ("rollout out a file", "rollout", ["--out", "{file}"], ["is a file"], None, None),
    ("rollout horizon 0", "rollout", ["--horizon", "0"], ["horizon"], None, None),
    ("rollout pictures -1", "rollout", ["--pictures", "-1"], ["eval.num_pictures"], None, None),
    (
        "rollout world missing",
        "rollout",
        ["--world-models", "{run}/nowhere"],
        ["nowhere", "does not exist"],
        None,
        None,
    ),
    ("rollout hub id offline", "rollout", ["--world-models", "Amazon-FAR/not-downloaded"], ["hf download"], None, None),
    ("rollout batch 0", "rollout", ["--batch-size", "0"], ["batch_size"], None, None),
    ("rollout val_source", "rollout", ["data.val_source=vspw"], ["data.val_source"], None, None),
    # recording and the plan bench
    ("record into a recording", "record", [], ["already holds", "episode_000000", "overwrite=true"], "recording", None),
    ("record out a file", "record", ["--out", "{file}"], ["is a file"], None, None),
    ("record missing module", "record", ["--env", "nosuchpkg:Foo-v0"], ["nosuchpkg:Foo-v0"], None, None),
    ("record unknown env", "record", ["--env", "NoSuchEnv-v9"], ["NoSuchEnv-v9"], None, None),
    ("record episodes 0", "record", ["--episodes", "0"], ["--episodes"], None, None),
    ("record frame size", "record", ["--frame-size", "12"], ["frame_size"], None, None),
    ("record state key", "record", ["--state-key", "nope"], ["state_key", "nope"], None, None),
    ("bench missing module", "bench", ["env=nosuchpkg:Foo-v0"], ["nosuchpkg:Foo-v0"], None, None),
    ("bench frame size", "bench", ["record.frame_size=12"], ["record.frame_size"], None, None),
    ("bench budget minutes", "bench", ["eval.budget_minutes=-1"], ["eval.budget_minutes"], None, None),
    ("bench budget", "bench", ["eval.budgets=[300x0]"], ["planner.iterations"], None, None),
    ("bench budget words", "bench", ["eval.budgets=[lots]"], ["search budget 'lots'"], None, None),
    ("bench policy keywords", "bench", ["record.policy_kwargs={{step:-5}}"], ["policy"], None, None),
    ("bench more tests", "bench", ["eval.more_tests=[{{tolerance: 0}}]"], ["more_tests[0].tolerance"], None, None),
    ("bench state scale", "bench", ["eval.state_scale=[1.0,1.0,8.0]"], ["eval.state_scale"], None, None),
    ("bench episodes 0", "bench", ["eval.episodes=0"], ["eval.episodes"], None, None),
    ("diagnosis no run", "diagnosis", [], ["does not exist", "run the plan bench"], None, None),
    ("diagnosis episodes negative", "diagnosis", ["eval.episodes=-3"], ["eval.episodes"], None, None),
    ("diagnosis no planner", "diagnosis", ["eval.methods=[random]"], ["eval.methods"], None, None),
    ("task draw episodes 0", "draw", ["record.episodes=0"], ["--episodes"], None, None),
]


@pytest.mark.parametrize(
    "command, args, fragments, protected, damage", [pytest.param(*case[1:], id=case[0]) for case in CASES]
)
def test_bad_input_is_one_line_and_leaves_everything_as_it_was(
    made, tmp_path, offline_cache, command, args, fragments, protected, damage
):
    target = tmp_path / "target"
    if protected is not None:
        shutil.copytree(made[protected], target)
        if damage is not None:
            damage(target)
    before = checksums(target) if protected is not None else None
    names = {key: value for key, value in made.items() if key not in ("tok", "world")}
    ran = run(command, args, run=target, tok=made["tok"], world=made["world_final"], **names)
    assert ran.status == 2, ran.stdout[-2000:] + ran.stderr[-3000:]
    assert "Traceback" not in ran.stderr, ran.stderr
    lines = ran.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, ran.stderr
    for fragment in fragments:
        assert fragment.format(**names) in errors[0], errors[0]
    if protected is None:
        assert not target.exists() or not any(target.iterdir()), sorted(target.rglob("*"))
    else:
        assert checksums(target) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_the_table_holds_every_case_once():
    assert len(CASES) >= 60 and len({case[0] for case in CASES}) == len(CASES)


def test_ctrl_c_is_one_line_naming_the_checkpoint_and_resume_finishes(tmp_path, monkeypatch):
    out = tmp_path / "run"
    step = engine._optimizer_step

    def interrupted_at_step_1(seed, at, *args):
        if at == 1:
            raise KeyboardInterrupt
        return step(seed, at, *args)

    monkeypatch.setattr(engine, "_optimizer_step", interrupted_at_step_1)
    ran = run("tokenizer", ["train.checkpoint_every=1"], run=out)
    assert ran.status == 130, ran.stderr
    errors = [line for line in ran.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "after step 1 of 2" in errors[0] and "step_000001" in errors[0], ran.stderr
    assert "resume=true" in errors[0] and "Traceback" not in ran.stderr
    monkeypatch.setattr(engine, "_optimizer_step", step)
    resumed = run("tokenizer", ["train.checkpoint_every=1", "resume=true"], run=out)
    assert resumed.status == 0, resumed.stderr
    assert "resuming from" in resumed.stdout and (out / "final").is_dir()


def test_overwrite_leaves_only_what_the_new_run_wrote(made, tmp_path):
    heads = tmp_path / "heads"
    shutil.copytree(made["heads"], heads)
    ran = run("heads", ["overwrite=true", "model.rgb=false"], run=heads, tok=made["tok"])
    assert ran.status == 0, ran.stderr
    assert sorted(p.name for p in heads.iterdir()) == ["config.yaml", "depth", "metrics.json", "segmentation"]

    episodes = tmp_path / "episodes"
    shutil.copytree(made["recording"], episodes)
    assert run("record", ["--episodes", "2", "--overwrite"], run=episodes).status == 0
    assert sorted(p.name for p in episodes.iterdir()) == ["episode_000000.safetensors", "episode_000001.safetensors"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_crash_while_final_is_replaced_leaves_a_whole_one(tmp_path, monkeypatch):
    final, new = tmp_path / "final", tmp_path / ".final.tmp"
    final.mkdir()
    (final / "weights").write_text("old")
    new.mkdir()
    (new / "weights").write_text("new")
    rename = Path.rename

    def crash_when_renaming_the_new_one_in(self, target):
        if self.name == ".final.tmp":
            raise KeyboardInterrupt
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", crash_when_renaming_the_new_one_in)
    with pytest.raises(KeyboardInterrupt):
        replace_folder(new, final)
    monkeypatch.setattr(Path, "rename", rename)
    assert not final.exists() and (tmp_path / "final.old" / "weights").read_text() == "old"
    replace_folder(new, final)  # the next swap puts the old one back first, then swaps
    assert (final / "weights").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["final"]


@pytest.fixture(scope="module")
def dream(made) -> DreamEnv:
    from tokenizer.model import Tokenizer

    tokenizer = Tokenizer.from_pretrained(made["tok"]).eval()
    config = WorldModelConfig(
        predictor=micro_predictor_config([12], layer_scale_init=1.0),
        objective=ObjectiveConfig(kind="bom", num_hypotheses=8, selection_chunk=8),
        actions=ActionSpace(dim=2),
        num_samples=2,
    )
    torch.manual_seed(0)
    world = build_world_model(tokenizer, config).eval()
    frames = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    return DreamEnv(world, context=frames, num_samples=2)


@pytest.mark.parametrize("action", ["left", [float("nan"), 0.0], [0.0, float("inf")]], ids=["word", "nan", "inf"])
def test_dream_refuses_an_action_that_is_not_finite_numbers(dream, action):
    dream.reset(seed=0)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exit:
        run_cli(lambda: dream.step(action))
    assert exit.value.code == 2 and stderr.getvalue().startswith("error: ") and len(stderr.getvalue().splitlines()) == 1
    observation, *_ = dream.step(np.zeros(2, dtype=np.float32))
    assert np.all(np.isfinite(observation))


def test_dream_clips_actions_to_its_box(dream):
    dream.reset(seed=0)
    clipped = dream.step(np.array([1.0, -1.0], dtype=np.float32))[0]
    dream.reset(seed=0)
    beyond = dream.step(np.array([5.0, -7.0], dtype=np.float32))[0]
    assert np.array_equal(clipped, beyond)
