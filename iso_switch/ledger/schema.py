"""The SQLite schema, as an ordered list of migrations.

``PRAGMA user_version`` holds how many migrations have been applied; opening
a store applies the rest in one transaction, so a crash mid-migration leaves
the previous version intact. Never edit a released migration: append one.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: the ledger, the switch's reference data and its decision journal.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

    CREATE TABLE accounts (
        id INTEGER PRIMARY KEY,
        number TEXT NOT NULL UNIQUE,
        currency INTEGER NOT NULL,
        kind TEXT NOT NULL,
        closed INTEGER NOT NULL DEFAULT 0,
        debits_pending INTEGER NOT NULL DEFAULT 0,
        debits_posted INTEGER NOT NULL DEFAULT 0,
        credits_pending INTEGER NOT NULL DEFAULT 0,
        credits_posted INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL
    );

    -- Immutable: a row is inserted once and never updated or deleted.
    CREATE TABLE transfers (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        debit_account_id INTEGER NOT NULL REFERENCES accounts(id),
        credit_account_id INTEGER NOT NULL REFERENCES accounts(id),
        amount_minor INTEGER NOT NULL,
        currency INTEGER NOT NULL,
        pending_id INTEGER,
        ref TEXT NOT NULL,
        created_at TEXT NOT NULL
    );

    -- The resolution state of each pending transfer (id = the pending transfer's id).
    CREATE TABLE holds (
        id INTEGER PRIMARY KEY,
        debit_account_id INTEGER NOT NULL,
        credit_account_id INTEGER NOT NULL,
        amount_minor INTEGER NOT NULL,
        currency INTEGER NOT NULL,
        state TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        posted_minor INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX holds_pending_expiry ON holds(expires_at) WHERE state = 'pending';

    CREATE TABLE issuers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        available INTEGER NOT NULL DEFAULT 1
    );
    CREATE TABLE bin_routes (prefix TEXT PRIMARY KEY, issuer_id TEXT NOT NULL);

    CREATE TABLE merchants (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        settlement_account_id INTEGER NOT NULL,
        cash_account_id INTEGER NOT NULL
    );
    CREATE TABLE terminals (
        id TEXT PRIMARY KEY,
        merchant_id TEXT NOT NULL,
        mac_required INTEGER NOT NULL,
        allowed_codes TEXT NOT NULL
    );

    CREATE TABLE cards (
        id INTEGER PRIMARY KEY,
        pan_hash BLOB NOT NULL UNIQUE,
        pan_masked TEXT NOT NULL,
        last4 TEXT NOT NULL,
        expiry TEXT NOT NULL,
        state TEXT NOT NULL,
        account_id INTEGER NOT NULL,
        pvd_method TEXT NOT NULL,
        pvd_pvki INTEGER NOT NULL,
        pvd_value TEXT NOT NULL,
        pvd_key_name TEXT NOT NULL,
        pin_tries INTEGER NOT NULL DEFAULT 0,
        pin_blocked INTEGER NOT NULL DEFAULT 0,
        limit_txn_minor INTEGER NOT NULL,
        limit_day_minor INTEGER NOT NULL,
        limit_day_count INTEGER NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE card_accounts (
        card_id INTEGER NOT NULL,
        account_id INTEGER NOT NULL,
        PRIMARY KEY (card_id, account_id)
    );
    CREATE TABLE card_daily (
        card_id INTEGER NOT NULL,
        day TEXT NOT NULL,
        amount_minor INTEGER NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (card_id, day)
    );

    -- One row per stored decision, under the transaction's key.
    CREATE TABLE txns (
        seq INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        content BLOB NOT NULL,
        mti TEXT NOT NULL,
        rc TEXT NOT NULL,
        rrn TEXT NOT NULL,
        auth_code TEXT NOT NULL,
        de54 TEXT NOT NULL,
        created_at TEXT NOT NULL,
        terminal TEXT NOT NULL,
        stan TEXT NOT NULL,
        pan_masked TEXT NOT NULL,
        card_id INTEGER,
        code TEXT NOT NULL,
        amount_minor INTEGER NOT NULL,
        currency INTEGER NOT NULL,
        debit_account_id INTEGER,
        credit_account_id INTEGER,
        hold_id INTEGER,
        state TEXT NOT NULL,
        effective_minor INTEGER NOT NULL,
        business_day TEXT NOT NULL,
        counts_daily INTEGER NOT NULL DEFAULT 0,
        orig_key TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX txns_created ON txns(created_at);
    CREATE INDEX txns_hold ON txns(hold_id) WHERE hold_id IS NOT NULL;

    CREATE TABLE remembered_reversals (
        orig_key TEXT PRIMARY KEY,
        reversal_key TEXT NOT NULL,
        created_at TEXT NOT NULL
    );

    CREATE TABLE reviews (
        id INTEGER PRIMARY KEY,
        txn_key TEXT NOT NULL UNIQUE,
        hold_id INTEGER NOT NULL,
        state TEXT NOT NULL,
        created_at TEXT NOT NULL,
        decided_at TEXT
    );

    CREATE TABLE ksn_state (
        device TEXT PRIMARY KEY,
        highest INTEGER NOT NULL,
        bitmap INTEGER NOT NULL,
        updated_at TEXT NOT NULL
    );

    CREATE TABLE blacklist (
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (kind, value)
    );

    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY,
        created_at TEXT NOT NULL,
        rule TEXT NOT NULL,
        action TEXT NOT NULL,
        txn_key TEXT NOT NULL,
        pan_masked TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    """,
    # 2: the audit log of administrative actions: append-only, enforced by
    # the database itself, so no code path (and no admin command) can edit
    # or erase what an operator did.
    """
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        before TEXT NOT NULL,
        after TEXT NOT NULL
    );
    CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    """,
    # 3: approval codes are drawn at random and must be unique per card per
    # business day; this finds a card's codes of a day in one lookup.
    """
    CREATE INDEX txns_card_day_auth ON txns (card_id, business_day, auth_code)
        WHERE auth_code != '';
    """,
    # 4: a terminal's refund policy. A terminal on record before it keeps
    # its behaviour (refunds allowed, no daily cap): the migration changes
    # no deployed terminal's answers; an operator sets a policy per terminal.
    # terminal_daily holds each terminal's approved refunds per business
    # day, kept in the transaction that posts or reverses them; it starts
    # from the refunds already in the journal.
    """
    ALTER TABLE terminals ADD COLUMN refunds_allowed INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE terminals ADD COLUMN refund_day_minor INTEGER;
    CREATE TABLE terminal_daily (
        terminal_id TEXT NOT NULL,
        day TEXT NOT NULL,
        refund_minor INTEGER NOT NULL,
        PRIMARY KEY (terminal_id, day)
    );
    INSERT INTO terminal_daily (terminal_id, day, refund_minor)
        SELECT terminal, business_day, sum(effective_minor) FROM txns
        WHERE substr(code, 1, 2) = '20' AND substr(mti, 1, 3) = '020' AND state = 'posted'
        GROUP BY terminal, business_day;
    """,
    # 5: issuer links. link_forwards records each request forwarded to a
    # remote issuer before its bytes leave (crash recovery finds the ones
    # without an outcome); link_stans and link_stan_blocks give each issuer
    # its DE11 sequence (see iso_switch.ledger.links for the 24-hour rule);
    # saf_items is the store-and-forward queue; stand_in_daily counts
    # stand-in approvals per card (by PAN hash) and business day. Cardholder
    # data in these tables is masked or sealed by the caller, never clear.
    """
    CREATE TABLE link_forwards (
        id INTEGER PRIMARY KEY,
        txn_key TEXT NOT NULL UNIQUE,
        issuer_id TEXT NOT NULL,
        mti TEXT NOT NULL,
        stan TEXT NOT NULL,
        transmitted TEXT NOT NULL,
        rrn TEXT NOT NULL,
        amount_minor INTEGER NOT NULL,
        currency INTEGER NOT NULL,
        pan_masked TEXT NOT NULL,
        sealed BLOB NOT NULL,
        node TEXT NOT NULL,
        created_at TEXT NOT NULL,
        outcome TEXT NOT NULL DEFAULT '',
        outcome_rc TEXT NOT NULL DEFAULT '',
        decided_at TEXT
    );
    CREATE INDEX link_forwards_open ON link_forwards (node, created_at) WHERE outcome = '';

    CREATE TABLE link_stans (issuer_id TEXT PRIMARY KEY, counter INTEGER NOT NULL);
    CREATE TABLE link_stan_blocks (
        issuer_id TEXT NOT NULL,
        block INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        PRIMARY KEY (issuer_id, block)
    );

    CREATE TABLE saf_items (
        id INTEGER PRIMARY KEY,
        issuer_id TEXT NOT NULL,
        txn_group TEXT NOT NULL,
        kind TEXT NOT NULL,
        mti TEXT NOT NULL,
        stan TEXT NOT NULL,
        transmitted TEXT NOT NULL,
        rrn TEXT NOT NULL,
        amount_minor INTEGER NOT NULL,
        currency INTEGER NOT NULL,
        pan_masked TEXT NOT NULL,
        sealed BLOB NOT NULL,
        fields TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        created_at TEXT NOT NULL,
        queued_at TEXT NOT NULL,
        last_rc TEXT NOT NULL DEFAULT '',
        lease_node TEXT NOT NULL DEFAULT '',
        lease_until TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX saf_items_open ON saf_items (issuer_id, txn_group, id)
        WHERE state IN ('queued', 'outstanding');
    CREATE INDEX saf_items_state ON saf_items (state, issuer_id);

    CREATE TABLE stand_in_daily (
        pan_hash BLOB NOT NULL,
        day TEXT NOT NULL,
        count INTEGER NOT NULL,
        amount_minor INTEGER NOT NULL,
        PRIMARY KEY (pan_hash, day)
    );
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)
