BEGIN TRANSACTION;
CREATE TABLE approval (
	id INTEGER NOT NULL, 
	campaign_id INTEGER NOT NULL, 
	approved_by VARCHAR NOT NULL, 
	approved_at DATETIME NOT NULL, 
	fingerprint VARCHAR NOT NULL, 
	manifest VARCHAR NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(campaign_id) REFERENCES campaign (id)
);
CREATE TABLE campaign (
	id INTEGER NOT NULL, 
	slug VARCHAR NOT NULL, 
	name VARCHAR NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (slug)
);
CREATE TABLE contact (
	id INTEGER NOT NULL, 
	municipality_id INTEGER, 
	role VARCHAR NOT NULL, 
	portfolio VARCHAR, 
	party VARCHAR, 
	title VARCHAR, 
	voorletters VARCHAR, 
	voornaam VARCHAR, 
	tussenvoegsel VARCHAR, 
	achternaam VARCHAR, 
	aanspreekvorm VARCHAR, 
	email VARCHAR NOT NULL, 
	email_normalized VARCHAR NOT NULL, 
	email_key VARCHAR NOT NULL, 
	email_hash VARCHAR NOT NULL, 
	office_key VARCHAR NOT NULL, 
	sort_name VARCHAR NOT NULL, 
	source VARCHAR NOT NULL, 
	imported_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	term_end DATE, 
	active BOOLEAN NOT NULL, 
	opted_in_at DATETIME, 
	opt_in_topics VARCHAR, 
	PRIMARY KEY (id), 
	FOREIGN KEY(municipality_id) REFERENCES municipality (id), 
	UNIQUE (office_key)
);
CREATE TABLE delivery (
	id INTEGER NOT NULL, 
	campaign_id INTEGER NOT NULL, 
	contact_id INTEGER, 
	state VARCHAR NOT NULL, 
	token VARCHAR, 
	message_id VARCHAR, 
	attempts INTEGER NOT NULL, 
	next_attempt_at DATETIME, 
	last_code INTEGER, 
	last_error VARCHAR, 
	skip_reason VARCHAR, 
	claimed_by VARCHAR, 
	lease_until DATETIME, 
	sent_at DATETIME, 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(contact_id) REFERENCES contact (id) ON DELETE SET NULL
);
CREATE TABLE event (
	id INTEGER NOT NULL, 
	kind VARCHAR NOT NULL, 
	contact_id INTEGER, 
	delivery_id INTEGER, 
	campaign_id INTEGER, 
	occurred_at DATETIME NOT NULL, 
	recorded_at DATETIME NOT NULL, 
	source VARCHAR NOT NULL, 
	bounce_type VARCHAR, 
	status_code VARCHAR, 
	text VARCHAR, 
	reference VARCHAR, 
	dedupe_key VARCHAR, 
	PRIMARY KEY (id), 
	FOREIGN KEY(contact_id) REFERENCES contact (id) ON DELETE SET NULL, 
	FOREIGN KEY(delivery_id) REFERENCES delivery (id), 
	FOREIGN KEY(campaign_id) REFERENCES campaign (id), 
	UNIQUE (dedupe_key)
);
CREATE TABLE inboxcursor (
	id INTEGER NOT NULL, 
	mailbox VARCHAR NOT NULL, 
	uidvalidity INTEGER NOT NULL, 
	last_uid INTEGER NOT NULL, 
	synced_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (mailbox)
);
CREATE TABLE municipality (
	id INTEGER NOT NULL, 
	cbs_code VARCHAR(6) NOT NULL, 
	name VARCHAR NOT NULL, 
	province_code VARCHAR NOT NULL, 
	province VARCHAR NOT NULL, 
	aliases VARCHAR NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (cbs_code)
);
CREATE TABLE schema_migration (name VARCHAR(200) PRIMARY KEY, applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
INSERT INTO "schema_migration" VALUES('m001_initial','2026-11-23 22:03:36');
INSERT INTO "schema_migration" VALUES('m002_delivery_keys','2026-11-23 22:03:36');
CREATE TABLE suppression (
	id INTEGER NOT NULL, 
	key_hash VARCHAR NOT NULL, 
	email_key VARCHAR, 
	reason VARCHAR NOT NULL, 
	source VARCHAR NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (key_hash)
);
CREATE INDEX ix_suppression_email_key ON suppression (email_key);
CREATE INDEX ix_contact_muni_sort ON contact (municipality_id, sort_name);
CREATE INDEX ix_contact_email_hash ON contact (email_hash);
CREATE INDEX ix_contact_email_key ON contact (email_key);
CREATE INDEX ix_approval_campaign_id ON approval (campaign_id);
CREATE UNIQUE INDEX uq_delivery_contact_campaign ON delivery (contact_id, campaign_id);
CREATE UNIQUE INDEX uq_delivery_token ON delivery (token) WHERE token IS NOT NULL;
CREATE UNIQUE INDEX uq_delivery_message_id ON delivery (message_id) WHERE message_id IS NOT NULL;
CREATE INDEX ix_delivery_due ON delivery (campaign_id, state, next_attempt_at);
CREATE INDEX ix_event_reference ON event (reference);
CREATE INDEX ix_event_delivery_id ON event (delivery_id);
CREATE INDEX ix_event_campaign_id ON event (campaign_id);
CREATE INDEX ix_event_kind ON event (kind);
CREATE INDEX ix_event_contact_id ON event (contact_id);
COMMIT;
