"""A portal destination's options (``services/portal/deliver.py``): today's routing file keeps working with the
defaults of the new options, and a wrong new option is refused naming it."""

from __future__ import annotations

from typing import Any

import pytest

from config.options import OptionsError, resolve
from config.routing import Destination, load_routing
from services.portal.deliver import PortalOptions
from tests.harness import ROOT

TODAYS_FILE = ROOT / "tests" / "fixtures" / "relay-2026-11.toml"
UNIT = "000.21.00.H49"


@pytest.fixture(autouse=True)
def _account(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOTCUA_PORTAL_USERNAME", "relay")
    monkeypatch.setenv("MOTCUA_PORTAL_PASSWORD", "pw")


def portal(**options: Any) -> Destination:
    return Destination(name="portal", kind="portal", options={"url": "http://127.0.0.1:8702", **options})


def test_todays_portal_table_reads_with_the_contracts_defaults() -> None:
    # given the operators' routing file of today, which names none of the new options
    destination = load_routing(TODAYS_FILE).destinations["portal"]
    # when
    options = resolve(destination, PortalOptions)
    # then the endpoints stay where they were, and the new options are the defaults
    assert (options.auth_path, options.integration_path) == ("/api/dvcqg/login", "/api/dvcqg/service")
    assert (options.madonvi, options.online_service, options.ambiguous_progress) == (None, "LayHoSoTrucTuyen",
                                                                                     "resend")
    assert options.agency_names == {} and options.units_file is None and options.catalogue_ttl == 6 * 3600
    # and the agency names come from the unit directory the exchange reads
    assert options.mapping().agency(UNIT) == "UBND phường Hồng Gai"


def test_agency_names_come_before_the_unit_directory() -> None:
    options = resolve(portal(agency_names={UNIT: "Ủy ban nhân dân phường Hồng Gai"}), PortalOptions)
    assert options.mapping().agency(UNIT) == "Ủy ban nhân dân phường Hồng Gai"
    assert options.mapping().agency("000.00.07.H49") == "Sở Nông nghiệp và Môi trường tỉnh Quảng Ninh"


@pytest.mark.parametrize(("options", "named"), [
    ({"agency_names": {UNIT: UNIT}}, "agency_names"),
    ({"auth_path": "api/login"}, "auth_path"),
    ({"integration_path": "ftp://lgsp/dvcqg"}, "integration_path"),
    ({"ambiguous_progress": "skip"}, "ambiguous_progress"),
    ({"madonvi": ""}, "madonvi"),
    ({"online_service": ""}, "online_service"),
    ({"catalogue_ttl": "soon"}, "catalogue_ttl"),
    ({"units_file": "/nowhere/units.csv"}, "units.csv"),
])
def test_a_wrong_new_option_is_refused_naming_it(options: dict[str, Any], named: str) -> None:
    with pytest.raises(OptionsError, match=named) as caught:
        resolve(portal(**options), PortalOptions)
    assert caught.value.destination == "portal"


def test_endpoints_may_be_full_urls_as_opencps_configures_them() -> None:
    options = resolve(portal(auth_path="https://lgsp.quangninh.gov.vn/oauth/dvcqg",
                             integration_path="/lgsp/dvcqg/v2"), PortalOptions)
    assert options.auth_path.startswith("https://") and options.integration_path == "/lgsp/dvcqg/v2"
