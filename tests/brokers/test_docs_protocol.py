"""docs/protocol.md describes the topology the code declares, and its sections exist.

The page's tables are read as data: the exchanges with their types, the queues, the
exact queue arguments and the policy bodies must be those of ``brokers/topology.py``
and ``brokers/amqp_topology.py``, no more and no fewer. Every "docs/protocol.md §N"
cited in the code, the tests and the docs must name a section of the page.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from icij_nb.brokers import topology
from icij_nb.brokers.amqp_manager import dead_letter_queue_name
from icij_nb.brokers.amqp_topology import EXCHANGES
from icij_nb.brokers.amqp_worker import worker_event_queue_name

ROOT = Path(__file__).parents[2]
PAGE = ROOT / "docs" / "protocol.md"
CITATION = re.compile(r"docs/protocol\.md\s+((?:§[\d.]+(?:[-\u2013, ]+)?)+)")
SECTION = re.compile(r"§(\d+(?:\.\d+)*)")


def page() -> str:
    return PAGE.read_text(encoding="utf-8")


def section(number: str) -> str:
    """The text of section ``number`` ("1.3"), up to the next heading."""
    text = page()
    heading = re.search(rf"^#+ {re.escape(number)}\.? .*$", text, re.MULTILINE)
    assert heading is not None, f"docs/protocol.md has no section {number}"
    following = re.compile(r"^#+ ", re.MULTILINE).search(text, heading.end())
    return text[heading.end() : following.start() if following else len(text)]


def table(number: str) -> list[list[str]]:
    """The rows of the first table of a section, as stripped cells."""
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section(number).splitlines()
        if line.startswith("|")
    ]
    return [r for r in rows[2:] if r]  # without the header and its rule


def code_names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def constants(prefix: str) -> set[str]:
    return {
        value
        for name, value in vars(topology).items()
        if name.startswith(prefix) and isinstance(value, str)
    }


def test_the_exchange_table_is_the_declared_exchanges_with_their_types():
    documented = {code_names(row[0])[0]: row[1] for row in table("1.1")}

    assert documented == {name: kind.value for name, kind in EXCHANGES}
    assert set(documented) == constants("EXCHANGE_")


def test_the_queue_table_names_the_queues_of_the_code():
    names = [code_names(row[0]) for row in table("1.2")]
    documented = {n[0] for n in names if n}

    assert documented == (
        constants("QUEUE_") - {topology.QUEUE_WORKER_EVENT, topology.QUEUE_MONITORING}
    ) | {
        topology.task_queue_name("<group>"),
        worker_event_queue_name("<workerId>"),
        dead_letter_queue_name("<app>"),
    }
    # The two queues icij_nb names but never declares are explained below the table.
    for name in (topology.QUEUE_WORKER_EVENT, topology.QUEUE_MONITORING):
        assert f"`{name}`" in section("1.2")


def arguments_of(cell: str) -> dict[str, str]:
    return dict(re.findall(r'`([\w-]+): "([^"]+)"`', cell))


def test_the_queue_arguments_are_exactly_those_declared():
    rows = {tuple(code_names(row[0])): row[1] for row in table("1.3")}
    task_queues = (topology.QUEUE_TASK, topology.task_queue_name("<group>"))

    assert arguments_of(rows[task_queues]) == topology.TASK_QUEUE_ARGUMENTS
    assert (
        arguments_of(rows[(topology.QUEUE_MANAGER_EVENT,)])
        == topology.MANAGER_EVENT_ARGUMENTS
    )
    cancels = arguments_of(rows[(topology.QUEUE_CANCELS,)])
    bytes_cap = re.search(
        r"`x-max-length-bytes: (\d+)`", rows[(topology.QUEUE_CANCELS,)]
    )
    assert bytes_cap is not None
    cancels["x-max-length-bytes"] = int(bytes_cap.group(1))
    assert cancels == topology.CANCELS_ARGUMENTS
    assert rows[()] == "none"  # every other queue


def test_every_routing_key_is_documented_and_no_other():
    text = page()
    documented = set(re.findall(r"`(routingKey\w+)`", text))
    exchanges = set(re.findall(r"`(exchange\w+)`", text))

    assert documented == constants("ROUTING_")
    assert exchanges == constants("EXCHANGE_")
    for header in (topology.WORKER_ID_HEADER, topology.PUBLISHED_AT_HEADER):
        assert f"`{header}`" in section("2.2")


def test_the_policy_bodies_are_those_put():
    bodies = {code_names(row[0])[0]: row[1] for row in table("1.5")}

    def body(name: str) -> object:
        return json.loads(code_names(bodies[name])[0])

    assert body("task-group-policy-TASK") == topology.task_group_policy(None, None)
    assert body("worker-events-policy") == topology.WORKER_EVENTS_POLICY
    assert body("health-policy-MONITORING") == topology.HEALTH_POLICY
    grouped = bodies["task-group-policy-TASK.<group>"]
    assert f"`{topology.task_group_policy('<group>', None)['pattern']}`" in grouped
    assert '"max-length": N' in section("1.5")


def has_section(number: str) -> bool:
    return bool(re.search(rf"^#+ {re.escape(number)}\.? ", page(), re.MULTILINE))


def cited_sections() -> list[tuple[str, str]]:
    paths = [ROOT / "README.md"]
    for folder in ("icij_nb", "tests", "docs", "benchmarks"):
        paths += sorted((ROOT / folder).rglob("*"))
    cited = []
    for path in paths:
        if path.suffix not in (".py", ".md") or path == PAGE:
            continue
        where = str(path.relative_to(ROOT))
        for match in CITATION.finditer(path.read_text(encoding="utf-8")):
            cited += [(where, number) for number in SECTION.findall(match[1])]
    return cited


def test_every_cited_section_exists():
    cited = cited_sections()
    missing = [f"{where}: §{n}" for where, n in cited if not has_section(n)]

    assert cited
    assert not missing, f"citations of docs/protocol.md sections it lacks: {missing}"


def test_the_page_cites_its_own_sections_only():
    missing = {n for n in SECTION.findall(page()) if not has_section(n)}
    assert not missing
