"""Scraping the metrics child of a :class:`~tests.integration.conftest.SimNode` (test process).

Real HTTP over loopback, parsed with ``prometheus_client``'s own parser.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import SimNode

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(url: str, timeout: float = 5.0) -> tuple[int, str, str]:
    """(status, content type, body) of one GET; 4xx/5xx are answers too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def scrape(base: str) -> Samples:
    status, _ctype, body = get(base + "/metrics")
    assert status == 200, body
    return parse(body)


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def wait_url(node: SimNode, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            url = node.metrics_url()
        except Exception:  # the supervisor is not answering yet
            url = None
        if url is not None:
            return url
        time.sleep(0.05)
    raise AssertionError(f"the metrics child never listened:\n{node.log_text()}")


def wait_samples(
    base: str, check: Callable[[Samples], bool], timeout: float = 30.0, what: str = ""
) -> Samples:
    """Scrapes until ``check`` holds; AssertionError with the last scrape after ``timeout``."""
    deadline = time.monotonic() + timeout
    samples: Samples = {}
    while time.monotonic() < deadline:
        samples = scrape(base)
        if check(samples):
            return samples
        time.sleep(0.05)
    shown = "\n".join(f"{k}: {v}" for k, v in sorted(samples.items()) if "bucket" not in k[0])
    raise AssertionError(f"never true: {what}\nlast scrape:\n{shown}")
