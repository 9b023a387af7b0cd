"""Celery with Redis as the broker: the scale-out executor and `facesocial worker`.

:func:`make_celery` builds a Celery app from settings (no module-level app:
the API process and each worker build their own). Delivery guarantees come
from Celery and the Redis transport, configured here:

* late acknowledgement (``task_acks_late``) and ``task_reject_on_worker_lost``:
  a message is acknowledged only after its item ended, so a worker killed
  mid-item leaves the message unacknowledged;
* the Redis transport's visibility timeout: an unacknowledged message is put
  back on the queue after ``batch_visibility_timeout_s``, and live workers
  sweep for such messages every ``batch_restore_interval_s``;
* ``worker_prefetch_multiplier=1``: a worker holds no more items than it runs;
* every key lives under ``{redis_prefix}:`` so deployments sharing a Redis
  do not see each other's queues.

A message delivered twice is harmless: the runner writes an item's end state
once (see :mod:`facesocial.jobs.runner`).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from facesocial.errors import ConfigurationError
from facesocial.settings import Settings

log = logging.getLogger(__name__)

TASK_NAME = "facesocial.jobs.process_item"


def queue_name(settings: Settings) -> str:
    return f"{settings.redis_prefix}.jobs"


def make_celery(settings: Settings) -> Any:
    from celery import Celery

    url = settings.celery_broker_url
    if not url:
        raise ConfigurationError("the celery executor needs a broker: set FACESOCIAL_REDIS_URL "
                                 "(or FACESOCIAL_BROKER_URL)")
    app = Celery("facesocial", broker=url, set_as_current=False)
    app.conf.update(
        task_default_queue=queue_name(settings),
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.batch_visibility_timeout_s,
            "unacked_restore_interval": settings.batch_restore_interval_s,
            "unacked_restore_throttle": 1,
            "global_keyprefix": f"{settings.redis_prefix}:celery:",
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
        },
    )
    app.facesocial_settings = settings  # type: ignore[attr-defined]
    app.facesocial_contexts = {}  # type: ignore[attr-defined]  # pid -> WorkerContext
    app.facesocial_lock = threading.Lock()  # type: ignore[attr-defined]

    @app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True,
              max_retries=None)
    def process_item(self: Any, job_id: str, item_id: str) -> str:
        ctx = worker_context(app)
        outcome = ctx.runner.process(item_id)
        if outcome.retry_in is not None:
            raise self.retry(countdown=outcome.retry_in)
        return outcome.state

    return app


class WorkerContext:
    """Everything a worker process needs to run items, built once per process: the
    database (migrated), the engine and its model manager, the gallery, the spool."""

    def __init__(self, settings: Settings) -> None:
        from facesocial.db.session import make_engine, session_factory, upgrade
        from facesocial.engine import Engine
        from facesocial.gallery.service import Gallery
        from facesocial.jobs.runner import ItemRunner, default_worker_name
        from facesocial.jobs.spool import Spool

        if settings.database_url is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.db = make_engine(settings)
        upgrade(self.db)
        self.sessions = session_factory(self.db)
        self.engine = Engine(settings)
        self.gallery = Gallery(self.sessions, settings, catalog=self.engine.catalog)
        self.spool = Spool(settings.spool_path)
        self.runner = ItemRunner(self, worker=f"celery:{default_worker_name()}")

    def close(self) -> None:
        self.engine.close()
        self.db.dispose()


def worker_context(app: Any) -> WorkerContext:
    """This process's context for ``app``, built on first use and kept on the app, per
    process id: a prefork child builds its own after the fork instead of using ONNX
    sessions made in its parent."""
    with app.facesocial_lock:
        ctx = app.facesocial_contexts.get(os.getpid())
        if ctx is None:
            ctx = app.facesocial_contexts[os.getpid()] = WorkerContext(app.facesocial_settings)
        return ctx  # type: ignore[no-any-return]


def run_worker(settings: Settings, *, concurrency: int | None = None, pool: str | None = None,
               loglevel: str = "INFO", hostname: str | None = None) -> None:
    """`facesocial worker`: a Celery worker consuming this deployment's job queue."""
    if settings.worker_nice:
        try:
            os.nice(settings.worker_nice)  # API requests on the same machine come first
        except OSError:  # pragma: no cover - not permitted on some platforms
            log.warning("could not lower the worker's CPU priority")
    app = make_celery(settings)
    pool = pool or settings.worker_pool
    if pool != "prefork":  # one process: load the models before taking the first item
        ctx = worker_context(app)
        if settings.warm_critical:
            ctx.engine.manager.warm_up()
    argv = ["worker", f"--concurrency={concurrency or settings.worker_concurrency}",
            f"--pool={pool}", f"--loglevel={loglevel}", "-Q", queue_name(settings),
            "--without-gossip", "--without-mingle", "--without-heartbeat"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    app.worker_main(argv)
