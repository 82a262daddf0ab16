"""Celery for the scale-out mode, wired the way Flask documents it ("Background Tasks with Celery").

Every task runs inside the Flask app context and finds the Postroom config and
sessions in ``app.extensions["postroom"]``, where :func:`web.create_app` put
them: no module-level app, no global config. The tasks themselves live in
:mod:`sync.tasks`, which knows nothing about Flask.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from flask import Flask, current_app

from sync.tasks import TaskContext, celery_settings, register_tasks


def _context() -> TaskContext:
    ext = current_app.extensions["postroom"]
    return TaskContext(config=ext["config"], sessions=ext["sessions"], sink=ext.get("metrics"))


def celery_init_app(app: Flask) -> Celery:
    """A Celery app configured from the Postroom config of ``app``, with Postroom's tasks on it."""

    class FlaskTask(Task):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(celery_settings(app.extensions["postroom"]["config"]))
    register_tasks(celery_app, _context)
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app
