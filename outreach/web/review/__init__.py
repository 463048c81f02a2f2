"""`outreach review`: reviewers read every letter of a campaign in their browser and decide on it.

- ``app.py``: ``create_review_app``, the routes wired onto the shared foundation (outreach/web/).
- ``access.py``: sessions, CSRF tokens, the login for a review bound to another address than loopback.
- ``views.py``: the pages (overview, recipients, one letter, decide) and the letter's own frame.
- ``templates/``, ``static/review.css``: the pages' markup and style (no inline style or script).

What the pages show comes from ``outreach.review`` (the cached check, overview, recipients, letter).
"""
