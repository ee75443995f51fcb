"""The sandbox's bookkeeping: accounts, Kie tasks, the charge log, request counters. Thread-safe.

Kept apart from HTTP so tests and the benchmark can read exactly what was charged, per key and per video.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import random
import re
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_sora.sandbox.faults import Faults

KIE_PRICE = 10.0
SAVESORA_PRICE = 1.0
SORA_URL = re.compile(r"https://sora\.chatgpt\.com/p/(s_[0-9a-f]{32})(?:[?#].*)?")  # the videos both services take


@dataclass
class SandboxConfig:
    """Behaviour of the emulated services. Defaults follow the specs; the demo and tests shorten latency."""

    latency: float = 2.0  # seconds a Kie task takes from create to terminal
    latency_jitter: float = 0.5  # +/- uniformly
    invisible_for: float = 0.3  # seconds recordInfo answers "recordInfo is null" after create
    create_limit: int = 20  # Kie creates per window per account
    create_window: float = 10.0
    savesora_latency: float = 0.2
    result_size: int = 32 * 1024  # bytes of each generated result video
    link_ttl: float = 24 * 3600.0  # how long a result link works
    refreshed_link_ttl: float = 20 * 60.0  # download-url links: 20 minutes
    webhook_key: str | None = None  # sign callbacks when set
    callback_retries: int = 2  # more tries of a callback the receiver did not answer with 2xx (or at all)
    callback_retry_delay: float = 1.0  # seconds before the first retry, doubled each time
    seed: int | None = None
    media_file: str = ""  # serve this file's bytes as every result (a real clip for the local engine's demos)


@dataclass
class Account:
    name: str
    api_key: str = field(repr=False)
    credits: float
    banned: bool = False


@dataclass
class Charge:
    service: str
    account: str
    video_url: str
    credits: float
    at: float
    task_id: str | None = None
    refunded: bool = False


@dataclass
class KieTask:
    task_id: str
    account: str
    video_url: str
    body: dict[str, Any]
    created: float  # wall clock
    latency: float
    will_fail: bool
    callback_url: str | None = None
    callback_sent: bool = False
    seen_done: float | None = None  # wall clock of the first recordInfo that showed it finished

    def phase(self, now: float, invisible_for: float) -> str:
        elapsed = now - self.created
        if elapsed < invisible_for:
            return "invisible"
        if elapsed >= self.latency:
            return "fail" if self.will_fail else "success"
        fraction = elapsed / self.latency
        return "waiting" if fraction < 0.2 else "queuing" if fraction < 0.4 else "generating"


class SandboxState:
    def __init__(self, config: SandboxConfig, faults: Faults | None = None) -> None:
        self.config = config
        self.faults = faults or Faults()
        self.lock = threading.RLock()
        self.rng = random.Random(config.seed)
        self.accounts: dict[str, Account] = {}  # by api key
        self.tasks: dict[str, KieTask] = {}
        self.charges: list[Charge] = []
        self.requests: Counter[str] = Counter()
        self.polls_by_task: Counter[str] = Counter()
        self.callbacks_sent: list[dict[str, Any]] = []
        self._creates: dict[str, deque[float]] = {}
        self._ids = itertools.count(1)
        self.link_secret = hashlib.sha256(str(self.rng.random()).encode()).hexdigest()

    # accounts -------------------------------------------------------------------------------------
    def add_account(self, api_key: str, credits: float, name: str | None = None) -> Account:
        with self.lock:
            account = Account(name=name or f"account-{len(self.accounts) + 1}", api_key=api_key,
                              credits=credits)
            self.accounts[api_key] = account
            return account

    def account(self, api_key: str | None) -> Account | None:
        with self.lock:
            return self.accounts.get(api_key or "")

    # Kie --------------------------------------------------------------------------------------------
    def create_allowed(self, account: Account, now: float) -> bool:
        """Sliding-window create limit; only accepted creates count."""
        with self.lock:
            window = self._creates.setdefault(account.name, deque())
            while window and now - window[0] >= self.config.create_window:
                window.popleft()
            return len(window) < self.config.create_limit

    def create_task(self, account: Account, video_url: str, body: dict[str, Any],
                    callback_url: str | None) -> KieTask:
        with self.lock:
            now = time.time()
            self._creates.setdefault(account.name, deque()).append(now)
            task_id = f"task_sora-watermark-remover_{int(now * 1000)}{next(self._ids):05d}"
            jitter = self.rng.uniform(-self.config.latency_jitter, self.config.latency_jitter)
            will_fail = video_url in self.faults.fail_video_urls or self.faults.task_fail.fire(self.rng)
            task = KieTask(task_id=task_id, account=account.name, video_url=video_url, body=body, created=now,
                           latency=max(self.config.invisible_for, self.config.latency + jitter),
                           will_fail=will_fail, callback_url=callback_url)
            self.tasks[task_id] = task
            self.charge(account, "kie", video_url, KIE_PRICE, task_id)
            return task

    # faults -----------------------------------------------------------------------------------------
    def update_faults(self, changes: dict[str, Any]) -> Faults:
        """Lay ``changes`` over the current fault switches, validated, in one step."""
        with self.lock:
            self.faults = Faults.model_validate({**self.faults.model_dump(), **changes})
            return self.faults

    # money ------------------------------------------------------------------------------------------
    def charge(self, account: Account, service: str, video_url: str, credits: float,
               task_id: str | None = None) -> Charge:
        with self.lock:
            account.credits -= credits
            record = Charge(service=service, account=account.name, video_url=video_url, credits=credits,
                            at=time.time(), task_id=task_id)
            self.charges.append(record)
            return record

    def refund(self, account: Account, record: Charge) -> None:
        with self.lock:
            account.credits += record.credits
            record.refunded = True

    # links ------------------------------------------------------------------------------------------
    def sign(self, path: str, expires: int) -> str:
        return hmac.new(self.link_secret.encode(), f"{path}:{expires}".encode(), hashlib.sha256).hexdigest()[:32]

    def link_valid(self, path: str, expires: int, signature: str) -> bool:
        return hmac.compare_digest(self.sign(path, expires), signature) and time.time() < expires

    # views ------------------------------------------------------------------------------------------
    def count_request(self, endpoint: str) -> None:
        with self.lock:
            self.requests[endpoint] += 1

    def task_log(self) -> list[dict[str, Any]]:
        """Every Kie task in create order: when it was created, how long it takes (for the benchmarks' T*), how
        often it was polled and when a poll first showed it finished (how long a finished task went unseen)."""
        with self.lock:
            return [{"task_id": t.task_id, "created": t.created, "latency": t.latency, "callback_url": bool(
                t.callback_url), "callback_sent": t.callback_sent, "polls": self.polls_by_task[t.task_id],
                "seen_done": t.seen_done} for t in self.tasks.values()]

    def charge_log(self) -> list[dict[str, Any]]:
        with self.lock:
            return [asdict(c) for c in self.charges]

    def summary(self) -> dict[str, Any]:
        """What was charged per account and per video URL (refunds excluded), plus request counts."""
        with self.lock:
            by_account: dict[str, float] = {}
            by_video: dict[str, float] = {}
            times_by_video: Counter[str] = Counter()
            for c in self.charges:
                if c.refunded:
                    continue
                by_account[c.account] = by_account.get(c.account, 0.0) + c.credits
                by_video[c.video_url] = by_video.get(c.video_url, 0.0) + c.credits
                times_by_video[c.video_url] += 1
            return {
                "credits_by_account": dict(by_account),
                "credits_by_video": dict(by_video),
                "charges_by_video": dict(times_by_video),
                "balances": {a.name: a.credits for a in self.accounts.values()},
                "requests": dict(self.requests),
                "tasks": len(self.tasks),
                "callbacks_sent": len(self.callbacks_sent),
            }

    def reset(self) -> None:
        """Forget tasks, charges and counters (accounts and config stay), and clear every fault."""
        with self.lock:
            self.tasks.clear()
            self.charges.clear()
            self.requests.clear()
            self.polls_by_task.clear()
            self.callbacks_sent.clear()
            self._creates.clear()
            self.faults = Faults()
