"""The worker process of a service: consumes its queue, relays its outbox, runs its timers."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import FrameType

from shared.bus import EventConsumer, Handler
from shared.config import Settings, startup_problem
from shared.db import Database
from shared.logs import configure_logging
from shared.metrics import serve_worker_metrics, use_process_local_values
from shared.relay import OutboxRelay

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timer:
    """A callable the worker runs every `every_seconds` (SLA breaches, due reminders...)."""

    every_seconds: float
    action: Callable[[], None]
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or getattr(self.action, "__name__", repr(self.action))


class ServiceWorker:
    """Consumer, relay and timers of one service, stopped together by one event."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        handlers: dict[str, Handler],
        *,
        timers: Iterable[Timer] = (),
    ) -> None:
        self.settings, self.db = settings, db
        self.consumer = EventConsumer(settings, db, handlers)
        self.relay = OutboxRelay(settings, db)
        self.timers = tuple(timers)
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def run(self) -> None:
        """Run until stop(): relay and timers in threads, the consumer in this thread.

        A service that consumes nothing (no handlers) opens no queue: this thread waits.
        """
        self._spawn("relay", self.relay.run, self.stopping)
        if self.timers:
            self._spawn("timers", self._run_timers)
        try:
            if self.consumer.handlers:
                self.consumer.run(self.stopping)
            else:
                self.stopping.wait()
        finally:
            self.stopping.set()
            for thread in self._threads:
                thread.join(timeout=10)
            log.info("worker stopped")

    def start(self) -> threading.Thread:
        """Run in a background thread (tests); stop() ends it."""
        thread = threading.Thread(target=self.run, name=f"{self.settings.service}-worker")
        thread.daemon = True
        thread.start()
        return thread

    def stop(self) -> None:
        """Ask every part to finish what it holds and close its connection."""
        self.stopping.set()

    def _spawn(self, name: str, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=f"{self.settings.service}-{name}")
        thread.daemon = True
        thread.start()
        self._threads.append(thread)

    def _run_timers(self) -> None:
        due = {timer: time.monotonic() + timer.every_seconds for timer in self.timers}
        while not self.stopping.is_set():
            now = time.monotonic()
            for timer, moment in due.items():
                if moment <= now:
                    self._fire(timer)
                    due[timer] = time.monotonic() + timer.every_seconds
            self.stopping.wait(max(0.0, min(due.values()) - time.monotonic()))

    @staticmethod
    def _fire(timer: Timer) -> None:
        try:
            timer.action()
        except Exception:
            log.exception("timer %s failed", timer.label)


def run_worker(
    settings: Settings,
    db: Database,
    handlers: dict[str, Handler],
    *,
    timers: Iterable[Timer] = (),
) -> None:
    """The worker process's main: JSON logs, its /metrics, graceful stop on SIGTERM/SIGINT.

    Exits with one line first if the settings may not run (no or a published secret: the
    worker signs links with keys derived from it).
    """
    problem = startup_problem(settings)
    if problem is not None:
        raise SystemExit(f"error: {problem}")
    configure_logging(settings.service, settings.log_level)
    use_process_local_values()
    metrics_server = serve_worker_metrics(settings)
    worker = ServiceWorker(settings, db, handlers, timers=timers)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("worker of %s starting", settings.service)
    try:
        worker.run()
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
