"""Reading a scrape as Prometheus does: the text format, parsed by ``prometheus_client``."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

#: A scrape: ``{(sample name, ((label, value), ...)): value}``, labels sorted.
Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Scrape:
    """Every sample of a scrape in Prometheus's text format."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scrape: Scrape, sample: str, /, **labels: str) -> float | None:
    """The sample ``sample{labels}`` of ``scrape``, or ``None`` when it has none."""
    return scrape.get((sample, tuple(sorted(labels.items()))))


def family(scrape: Scrape, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample named ``name``, by its labels."""
    return {labels: v for (sample, labels), v in scrape.items() if sample == name}
