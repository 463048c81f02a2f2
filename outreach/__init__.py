"""outreach: personalised letters to the people who decide on youth care in Dutch municipalities."""

__version__ = "0.1.0"
