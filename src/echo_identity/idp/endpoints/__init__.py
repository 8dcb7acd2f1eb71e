"""Protocol endpoints, one per module, on one blueprint (``blueprint.py``); ``idp.app`` registers
them."""
