"""The server certificate reloaded while omgate serves: on SIGHUP, and when its files
change (checked every ``server.reload_check_seconds``). A certificate that fails to load
leaves the one loaded in place; the one in use is kept in the metrics."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass

from service.logs import get_logger
from service.metrics import Metrics
from service.tls.context import ServerTls, TlsSetupError

log = get_logger("omgate")


@dataclass(frozen=True)
class CertificateReload:
    server_tls: ServerTls
    metrics: Metrics

    def track(self) -> None:
        """The metrics name the certificate in use and when it expires."""
        self.metrics.server_certificate(self.server_tls.settings.certfile,
                                        self.server_tls.not_after)

    def reload(self, trigger: str) -> None:
        try:
            self.server_tls.reload()
        except Exception as error:  # noqa: BLE001 - any file it cannot use: the watch goes on
            reason = str(error) if isinstance(error, TlsSetupError) else (
                f"{type(error).__name__}: {error}")
            log.error("tls.reload_failed", trigger=trigger, reason=reason,
                      detail="keeping the certificate already loaded")
        else:
            self.track()
            log.info("tls.reloaded", trigger=trigger,
                     certfile=str(self.server_tls.settings.certfile))

    def reload_on_sighup(self) -> None:
        with contextlib.suppress(NotImplementedError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload, "SIGHUP")

    async def watch(self, interval: float) -> None:
        """Reload whenever the files changed, checked every ``interval`` seconds."""
        while True:
            await asyncio.sleep(interval)
            if self.server_tls.files_changed():
                self.reload("file_change")
