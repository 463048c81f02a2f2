"""The tracker: events on deliveries and contacts, mailbox sync, bounce and auto-reply detection, reports."""
