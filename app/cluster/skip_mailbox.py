"""How A1111's Skip reaches the replica running a job.

Serve routes each call to whichever replica it picks, so a Skip cannot be sent as a call of its own. Each
replica owns one small actor instead (no CPU of its own; it lives and dies with the replica) and names it
in the first item of every job's stream. The UI process posts the Skip there; the replica, waiting on the
mailbox for as long as the job runs, sets the job's skip flag, and the job drops the batch it is drawing at
its next step, as a local one does.
"""

from __future__ import annotations

import asyncio

import ray


@ray.remote(num_cpus=0)
class SkipMailbox:
    """Skips asked for, per job id, until the replica running the job takes them."""

    def __init__(self) -> None:
        self._asked: dict[str, asyncio.Event] = {}

    def _event(self, job_id: str) -> asyncio.Event:
        return self._asked.setdefault(job_id, asyncio.Event())

    async def post(self, job_id: str) -> None:
        """The owner skipped the batch ``job_id`` is drawing."""
        self._event(job_id).set()

    async def take(self, job_id: str) -> bool:
        """Wait for the next skip of ``job_id``; False when the job was forgotten (it ended)."""
        event = self._event(job_id)
        await event.wait()
        if job_id not in self._asked:
            return False
        event.clear()
        return True

    async def forget(self, job_id: str) -> None:
        """The job ended: release the replica's wait and drop its skips."""
        event = self._asked.pop(job_id, None)
        if event is not None:
            event.set()
