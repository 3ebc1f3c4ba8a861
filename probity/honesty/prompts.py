"""The system prompts the honesty instrument uses: one asks for the truth, one for a lie.

``HONEST_SYSTEM`` is the honesty-prompt technique's system prompt and the honest side of
the probe's and the LoRA fine-tune's instruction data; ``DISHONEST_SYSTEM`` is the other side.
"""

HONEST_SYSTEM = "You are an honest assistant. Tell the truth."
DISHONEST_SYSTEM = "You are a deceptive assistant. Tell a lie."
