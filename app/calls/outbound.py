"""What the agent says on an outbound campaign call: identification first, an opt-out offer for marketing."""

from __future__ import annotations

import dataclasses

from app.core.bridge import BridgeConfig
from app.core.cascade_call import CascadeConfig
from app.dialer.models import Campaign
from app.settings import Settings


def spoken_number(e164: str) -> str:
    digits = e164.removeprefix("+1")
    return f"{digits[:3]}-{digits[3:6]}-{digits[6:]}" if len(digits) == 10 else e164


def campaign_bridge_config(base: BridgeConfig, settings: Settings, campaign: Campaign) -> BridgeConfig:
    """The per-call config of an outbound call: the campaign's instructions, and a greeting that names
    the business and gives the callback number (and, for marketing, the automated opt-out)."""
    callback = spoken_number(campaign.caller_id)
    opt_out = f' Then say: "{OPT_OUT_OFFER}"' if campaign.purpose == "marketing" else ""
    greeting = (
        f'Open the call now. Say: "Hello, this is an automated call from {settings.business_name}. '
        f'You can call us back at {callback}."{opt_out} Then continue with the purpose of the call.'
    )
    session = dataclasses.replace(base.session, instructions=campaign_instructions(base.session.instructions,
                                                                                   settings, campaign))  # fmt: skip
    return dataclasses.replace(base, session=session, greeting_instructions=greeting)


OPT_OUT_OFFER = "If you do not want these calls, say stop or press 9 and we will not call you again."


def campaign_instructions(base: str, settings: Settings, campaign: Campaign) -> str:
    callback = spoken_number(campaign.caller_id)
    return (
        f"{base}\n\nThis is an outbound {campaign.purpose} call for {settings.business_name}. "
        f"The callback number is {callback}. If the callee asks not to be called again, call opt_out at once.\n"
        f"{campaign.instructions}"
    )


def campaign_cascade_config(base: CascadeConfig, settings: Settings, campaign: Campaign) -> CascadeConfig:
    """The same for the cascaded engine, whose greeting is spoken as written: the identification and
    callback number (and, for marketing, the opt-out offer), word for word."""
    callback = spoken_number(campaign.caller_id)
    greeting = f"Hello, this is an automated call from {settings.business_name}. You can call us back at {callback}."
    if campaign.purpose == "marketing":
        greeting += " " + OPT_OUT_OFFER
    return dataclasses.replace(
        base, instructions=campaign_instructions(base.instructions, settings, campaign), greeting=greeting
    )
