"""Which secret and algorithm signed a Twilio request, and whether the signature holds.

Twilio signs with the account's Auth Token (HMAC-SHA1) unless the account uses Webhook Rules: then it
signs with a SharedKey's secret, names the key and the algorithm (HMAC_SHA1 or HMAC_SHA256) in
``X-Twilio-Webhooks-Signature-Settings: key=<sharedKeyId>,algorithm=<algorithm>``, and the twilio
package's validator checks either with the right secret. A SharedKey we were not given is refused.
"""

from __future__ import annotations

from collections.abc import Mapping

from twilio.request_validator import RequestValidator, get_signature_algorithm

SETTINGS_HEADER = "x-twilio-webhooks-signature-settings"


def shared_key_id(settings_header: str) -> str | None:
    for part in settings_header.split(","):
        name, separator, value = part.partition("=")
        if separator and name.strip() == "key" and value.strip():
            return value.strip()
    return None


class WebhookSignatures:
    def __init__(self, auth_token: str, shared_keys: Mapping[str, str] | None = None) -> None:
        self._auth_token = RequestValidator(auth_token)
        self._shared = {key_id: RequestValidator(secret) for key_id, secret in (shared_keys or {}).items()}

    def validate(self, url: str, params: object, signature: str, settings_header: str | None = None) -> bool:
        """``params``: the form fields (or, for a JSON body signed through ?bodySHA256=, the body)."""
        if not signature:
            return False
        if not settings_header:
            return bool(self._auth_token.validate(url, params, signature))
        key_id = shared_key_id(settings_header)
        validator = self._shared.get(key_id) if key_id else None
        if validator is None:
            return False
        return bool(validator.validate(url, params, signature, get_signature_algorithm(settings_header)))
