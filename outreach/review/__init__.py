"""What `outreach review` shows and records, independent of the web: the checked campaign (cached per
fingerprint), the overview, the recipients table, one letter, and the reviewer's decision."""
