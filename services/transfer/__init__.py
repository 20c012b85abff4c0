"""Inter-level transfer ("liên thông") through the provincial LGSP's exchange: hops out, the units' answers in.

Out (``kind = "transfer"``): a ``transfer.requested`` goes hop by hop along the unit directory
(``config/units.csv``), its documents streamed with their SHA-256; a later hop's result travels back down
(:mod:`services.transfer.deliver`).

In: beat reads the exchange's updates (:mod:`services.transfer.inbound`): ``transfer.accepted`` / ``refused`` /
``result`` back to the one-stop software, and the next hop when an intermediate unit accepted.
"""

from __future__ import annotations

from pydantic import Field

from services.base import BeatJob, Lazy, Service, ServiceSettings, Simulator
from services.transfer.deliver import TransferDeliverer, TransferOptions
from services.transfer.inbound import poll


class TransferSettings(ServiceSettings):
    transfer_poll_interval_seconds: float = Field(
        10.0, gt=0, description="how often beat reads the LGSP exchange's updates (units' answers to transfers)")


SERVICE = Service(
    kind="transfer",
    title="inter-level transfer through the provincial LGSP (liên thông)",
    deliverer=TransferDeliverer,
    options=TransferOptions,
    settings=TransferSettings,
    jobs=(BeatJob[TransferDeliverer](
        task="relay.transfer.poll", entry="transfer-updates", title="reading the LGSP exchange's answers", run=poll,
        every="transfer_poll_interval_seconds", done="transfer.polled", failed="transfer.poll_failed",
        noteworthy=lambda s: bool(s["stored"] or s["unknown"])),),
    simulators=(Simulator("LGSP exchange", "exchange_port", 8708, Lazy("services.transfer.simulator:exchange"),
                          help="WSDL at /soap/lienthong?wsdl; units accept after 5 s, decide 30 s later"),),
    demo=Lazy("services.transfer.demo:configure"),
)
