"""Local fakes of the Azure services the responder talks to, for tests, benchmarks and `dlp demo`.

Never imported by runtime code. The real Azure SDK clients work against these servers
unmodified (HTTPS with a throwaway CA, ARM-shaped answers, LROs, paging, faults).
Start with `LocalAzure` (dlp/emulator/local.py).
"""

from dlp.emulator.arm import ArmEmulator, LroConfig
from dlp.emulator.base import Emulator, Fault, FaultQueue, Request, RequestLog, RequestRecord, Response, arm_error
from dlp.emulator.local import UNSET_ENV, LocalAzure
from dlp.emulator.registries import export_pipeline, make_registry, private_endpoint_connection, registry_id
from dlp.emulator.tokens import EmulatorCredential, TokenStore

__all__ = [
    "UNSET_ENV", "ArmEmulator", "Emulator", "EmulatorCredential", "Fault", "FaultQueue", "LocalAzure", "LroConfig",
    "Request", "RequestLog", "RequestRecord", "Response", "TokenStore", "arm_error", "export_pipeline",
    "make_registry", "private_endpoint_connection", "registry_id",
]
