"""Letters: campaign folders, the Jinja environment, salutations, rendering and composing messages."""
