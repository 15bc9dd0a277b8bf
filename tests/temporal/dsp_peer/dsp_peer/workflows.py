"""Workflows as datashare-python writes them: ``args: dict`` in, JSON out.

Each one runs its activity on its own task queue, so one worker process serves both.
"""

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from datashare_python.config import ActivityTimeouts
    from datashare_python.utils import WorkflowWithProgress, execute_activity

    from .activities import Peer

_TIMEOUTS = ActivityTimeouts(
    start_to_close=timedelta(minutes=10), heartbeat=timedelta(seconds=5)
)


async def _run(activity, args: list) -> object:
    return await execute_activity(
        activity, args=args, task_queue=workflow.info().task_queue, timeouts=_TIMEOUTS
    )


@workflow.defn(name="dsp.add")
class AddWorkflow(WorkflowWithProgress):
    @workflow.run
    async def run(self, args: dict) -> int:
        return await _run(Peer.add, [args["a"], args["b"]])


@workflow.defn(name="dsp.fail")
class FailWorkflow(WorkflowWithProgress):
    @workflow.run
    async def run(self, args: dict) -> None:
        return await _run(Peer.fail, [args["why"]])


@workflow.defn(name="dsp.steps")
class StepsWorkflow(WorkflowWithProgress):
    @workflow.run
    async def run(self, args: dict) -> str:
        return await _run(Peer.steps, [args["n"]])


@workflow.defn(name="dsp.sleep")
class SleepWorkflow(WorkflowWithProgress):
    @workflow.run
    async def run(self, args: dict) -> str:
        return await _run(Peer.sleep, [args["s"]])


WORKFLOWS = [AddWorkflow, FailWorkflow, StepsWorkflow, SleepWorkflow]
