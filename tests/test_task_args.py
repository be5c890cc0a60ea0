"""Each stage's per-task settings are a frozen dataclass that travels inside a picklable Task."""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import pytest

from csaws_tools.dicom.convert import ConvertArgs
from csaws_tools.dicom.convert import plan as plan_convert
from csaws_tools.execution.runner import run_batch
from csaws_tools.execution.tasks import Task
from csaws_tools.masks.classes import MASK_CLASSES
from csaws_tools.masks.merge import MergeArgs, discover
from csaws_tools.masks.merge import plan_tasks as plan_merge
from csaws_tools.patches.worker import PatchArgs
from csaws_tools.review.export import ExportArgs
from csaws_tools.review.preview import PreviewArgs
from csaws_tools.train.datasets.prepare import ImageArgs

EXAMPLES = [
    ConvertArgs(frame=3),
    MergeArgs(image_id="001_2", patient_id="001", split="train", annotator=None, source_masks=("a.png", "b.png"),
              warnings=("missing class masks: text (treated as empty)",), masks={"cancer": "a.png", "skin": "b.png"},
              image="001_2.png"),
    MergeArgs(image_id="004_1", kind="consensus", cancer_masks=("x1.png", "x2.png", "x3.png"), error="missing"),
    PatchArgs(order=7, image_id="002_1", mask="maps/002_1.png"),
    PreviewArgs(image_id="002_1", mask="maps/002_1.png", image=None, title="trainval/002_1", error="no image"),
    ExportArgs(case_id="CSAWS_0001", image_id="002_1", patient_id="002", role="train", image="002_1.png",
               label="maps/002_1.png", label_out="out/CSAWS_0001.png"),
    ImageArgs(row=2, key="aachen_000000", group="aachen", label="gt/aachen_000000.png", coarse=None),
]


def _predict_args():
    pytest.importorskip("torch")
    from csaws_tools.train.predict import PredictArgs

    return PredictArgs(image_id="002_1", overlay="ov/002_1.png")


@pytest.mark.parametrize("args", EXAMPLES + ["predict"], ids=lambda a: type(a).__name__ if a != "predict" else a)
def test_stage_task_args_are_frozen_dataclasses_and_round_trip_through_pickle_in_a_task(args):
    if args == "predict":
        args = _predict_args()
    assert dataclasses.is_dataclass(args) and type(args).__dataclass_params__.frozen  # type: ignore[attr-defined]
    first = dataclasses.fields(args)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(args, first, getattr(args, first))
    task = Task(key="k", source="in/k", output="out/k.png", args=args)
    back = pickle.loads(pickle.dumps(task))
    assert back == task and type(back.args) is type(args)
    assert dataclasses.asdict(back.args) == dataclasses.asdict(args)


def _read_typed(task: Task[PatchArgs]) -> dict:
    """A worker reading its task's typed settings by attribute, in whatever process runs it."""
    return {"order": task.args.order, "mask": task.args.mask, "pid": os.getpid()}


def test_typed_task_args_reach_workers_in_pool_processes(tmp_path):
    tasks = [Task(key=f"i{k}", source=f"in/i{k}.png", args=PatchArgs(order=k, image_id=f"i{k}", mask=f"m/i{k}.png"))
             for k in range(6)]
    result = run_batch(tasks, _read_typed, manifest=tmp_path / "m.parquet", workers=2, progress=False)
    assert result.exit_code == 0
    by_source = {r["source"]: r for r in result.rows}
    assert [by_source[f"in/i{k}.png"]["order"] for k in range(6)] == list(range(6))
    assert [by_source[f"in/i{k}.png"]["mask"] for k in range(6)] == [f"m/i{k}.png" for k in range(6)]
    assert {r["pid"] for r in result.rows} - {os.getpid()}  # ran in pool processes


def test_task_without_args_has_none():
    assert Task(key="a", source="in/a").args is None


def test_planners_give_each_task_its_stages_typed_args(sample_root: Path, tmp_path):
    tasks, _ = plan_convert([sample_root / "dicom"], tmp_path / "png")
    assert tasks and all(type(t.args) is ConvertArgs and t.args.frame is None for t in tasks)
    items, _, _ = discover(sample_root / "CsawS")
    merge_tasks, _ = plan_merge(items, tmp_path / "maps")
    assert merge_tasks and all(type(t.args) is MergeArgs for t in merge_tasks)
    consensus = [t.args for t in merge_tasks if t.args.kind == "consensus"]
    assert consensus and all(a.annotator == "consensus" and len(a.cancer_masks) == 3 for a in consensus)
    image = next(t.args for t in merge_tasks if t.args.kind == "image")
    assert image.masks and image.source_masks == tuple(image.masks[c] for c in MASK_CLASSES if c in image.masks)
