"""What tests/unit/test_delivery.py and tests/system/test_delivery_system.py share."""

from __future__ import annotations

from messages import envelope, notification

from service.config import DeliveryConfig

RECORDS = [f"001A0000000000{index}AAA" for index in range(4)]


def states_message(version: int) -> bytes:
    """One notification per record: that record's state number ``version``."""
    return envelope(*(notification(f"04l{index}{version:011d}AAA",
                                   f"<sf:Version__c>{version}</sf:Version__c>",
                                   record_id=record)
                      for index, record in enumerate(RECORDS)))


def delivery_config(**overrides: object) -> DeliveryConfig:
    settings: dict = {"webhook_url": "", "webhook_headers": (), "webhook_ca": None,
                      "webhook_client_cert": None, "webhook_client_key": None,
                      "handler": "test:handler", "timeout": 0.5,
                      "max_attempts": 10, "retry_base_seconds": 0.05,
                      "retry_max_seconds": 0.1, "concurrency": 4, **overrides}
    return DeliveryConfig(**settings)
