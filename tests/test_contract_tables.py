"""The READMEs' NATS contract tables are the ones scripts/contract_tables.py renders from
tether.shared.nats.contract: a contract change without a regenerated README fails here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import BaseModel
from tether.shared.nats.contract import Channel
from tether.shared.nats.subjects import Stream

REPO = Path(__file__).resolve().parents[1]


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "contract_tables", REPO / "scripts" / "contract_tables.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


tables = _load_script()

#: Each agent service's README and the contract service it documents.
AGENT_READMES = {
    "svc-poller/README.md": "poller",
    "svc-launcher/README.md": "launcher",
    "svc-eventrelay/README.md": "eventrelay",
    "svc-logship/README.md": "logship",
    "svc-codeserver/README.md": "run-worker",
}


def test_readmes_are_generated_from_the_contract() -> None:
    assert tables.stale() == [], "run `uv run python scripts/contract_tables.py`"
    assert tables.main(["--check"]) == 0


@pytest.mark.parametrize(("readme", "service"), sorted(AGENT_READMES.items()))
def test_every_agent_service_readme_has_its_table(readme: str, service: str) -> None:
    text = (REPO / readme).read_text()
    assert f"<!-- contract:{service} -->" in text
    assert service in tables.services(tables.channels())


def test_every_contract_service_is_documented() -> None:
    assert tables.services(tables.channels()) <= tables.documented()


class _Ping(BaseModel):
    n: int


_DEMO = (
    Channel(
        name="ping",
        address="demo.ping.{who}",
        payload=_Ping,
        publishers=("alpha",),
        consumers=("beta",),
        description="A ping.",
        stream=Stream.WORK,
    ),
    Channel(
        name="raw",
        address="demo.raw",
        payload=None,
        publishers=("beta",),
        consumers=(),
        description="Bytes.",
        raw_body=True,
    ),
    Channel(
        name="status",
        address="$KV.demo_bucket.{instance}",
        payload=_Ping,
        publishers=("alpha", "beta"),
        consumers=("alpha",),
        description="KV.",
    ),
)


def test_rows_name_direction_subject_payload_and_stream() -> None:
    body = tables.render("alpha", _DEMO)
    assert body.splitlines()[2:] == [
        "| direction | subject | payload | stream |",
        "| --- | --- | --- | --- |",
        "| consumes | `$KV.demo_bucket.{instance}` | `_Ping` | KV `demo_bucket` |",
        "| publishes | `demo.ping.{who}` | `_Ping` | `TETHER_WORK` |",
        "| publishes | `$KV.demo_bucket.{instance}` | `_Ping` | KV `demo_bucket` |",
        "",
    ]
    assert "| publishes | `demo.raw` | raw bytes | core NATS |" in tables.render("beta", _DEMO)


def test_an_unknown_service_is_refused() -> None:
    with pytest.raises(tables.ContractDocError, match="contract:gamma: not a service"):
        tables.render("gamma", _DEMO)


def test_rewrite_replaces_only_the_marked_section() -> None:
    text = "intro\n<!-- contract:beta -->\nold table\n<!-- /contract -->\noutro\n"
    new = tables.rewrite(text, _DEMO)
    assert new.startswith("intro\n<!-- contract:beta -->\n")
    assert new.endswith("<!-- /contract -->\noutro\n")
    assert "old table" not in new and "| consumes | `demo.ping.{who}` |" in new
    assert tables.rewrite(new, _DEMO) == new


def test_check_fails_on_a_stale_readme(tmp_path: Path) -> None:
    fresh = (
        "# svc\n<!-- contract:alpha -->\n" + tables.render("alpha", _DEMO) + "<!-- /contract -->\n"
    )
    (tmp_path / "README.md").write_text("# root\n")
    (tmp_path / "svc-a").mkdir()
    (tmp_path / "svc-a" / "README.md").write_text(fresh)
    (tmp_path / "svc-b").mkdir()
    (tmp_path / "svc-b" / "README.md").write_text(
        "<!-- contract:beta -->\n| stale |\n<!-- /contract -->\n"
    )
    assert tables.stale(tmp_path, _DEMO) == ["svc-b/README.md"]
    assert tables.documented(tmp_path) == {"alpha", "beta"}
