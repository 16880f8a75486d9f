"""What a crashed or stopped daemon leaves of a step, and how often a step may be resumed.

Every process a step starts runs in a group of its own, and carries the step's marker in its environment
(inherited by all it forks); the group id is journaled (``step_process``, with the host) the moment it
runs. A step found ``started`` on resume was interrupted: before it runs again (or is asked ``is_done``),
every process of this host carrying its marker is killed, journaled group or not (a daemon killed between
the spawn and that journal line leaves one no group names), so no leftover races the new attempt. A
replica taking over on another host cannot see them; a pgid journaled there means nothing here.
The interruption is journaled (``step_interrupted``) and does not count against ``retries``;
``crash_resumes`` bounds how many a step may have.
"""

from __future__ import annotations

import logging

from rollbackd import procs
from rollbackd.ha import HOST
from rollbackd.incidents.journal import Journal
from rollbackd.plan import Step
from rollbackd.reasons import EventKind
from rollbackd.records import Event, Incident, StepRecord

log = logging.getLogger(__name__)

PROCESS = EventKind.STEP_PROCESS
INTERRUPTED = EventKind.STEP_INTERRUPTED


def marker(incident_id: str, index: int) -> str:
    """Stamped into the environment of every process of the step: what may be killed on resume."""
    return f"{incident_id}/{index}"


class Interrupted(Exception):
    """A step was interrupted by crashes of the daemon more often than its ``crash_resumes``."""


def process_hook(
    journal: Journal, incident: Incident, index: int, step: Step, attempt: int, grace: float
) -> procs.SpawnHook:
    async def started(pgid: int, program: str) -> None:
        await journal.append_event(
            Event(
                kind=PROCESS,
                service=incident.service,
                incident_id=incident.id,
                actor="rollbackd",
                data={
                    "index": index,
                    "step": step.name,
                    "attempt": attempt,
                    "pgid": pgid,
                    "program": program,
                    "host": HOST,
                },
            )
        )
        log.info("step_process_started", extra={"pgid": pgid, "program": program, "attempt": attempt})

    return procs.SpawnHook(marker=marker(incident.id, index), started=started, grace=grace)


async def resume_interrupted(
    journal: Journal, incident: Incident, step: Step, index: int, record: StepRecord, grace: float
) -> None:
    """Kill what is left of the interrupted attempt, journal the interruption, enforce the bound."""
    killed = await procs.kill_marked(marker(incident.id, index), grace)
    earlier = await journal.events(incident.id, (INTERRUPTED,))
    resumes = 1 + sum(1 for e in earlier if e.data.get("index") == index)
    await journal.append_event(
        Event(
            kind=INTERRUPTED,
            service=incident.service,
            incident_id=incident.id,
            actor="rollbackd",
            data={"index": index, "step": step.name, "attempt": record.attempts, "resumes": resumes, "killed": killed},
        )
    )
    log.warning(
        "step_interrupted",
        extra={
            "attempt": record.attempts,
            "resumes": resumes,
            "leftover_killed": killed,
            "crash_resumes": step.spec.crash_resumes,
        },
    )
    if resumes > step.spec.crash_resumes:
        raise Interrupted(
            f"interrupted {resumes} times by a crash or stop of rollbackd (crash_resumes: {step.spec.crash_resumes})"
        )
