"""Tasks, one module per family; importing this package registers them all in `TASKS`.

Adding a task family is one module (a `Task` subclass plus a `register_task(...)` line per task) and its import
below.
"""

from sift_bench.tasks import glue, instruct  # noqa: F401  (registers)
from sift_bench.tasks.base import TASKS, Batch, Example, Forward, Task, TaskKind, register_task

__all__ = ["TASKS", "Batch", "Example", "Forward", "Task", "TaskKind", "register_task"]
