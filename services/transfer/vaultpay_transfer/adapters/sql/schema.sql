-- The transfer service's tables in the shared `vaultpay` database (migration t0001).
--
-- The ledger is double-entry: every money movement is one row of ledger_transactions with
-- two or more ledger_postings that sum to zero per currency. An account is a wallet id
-- (`VPY-XXXXXX`, whose balance is also kept in wallets.balance) or a system account
-- (`sys:clearing`, `sys:payouts_in_flight`), which has NO balance row: its balance is the sum
-- of its postings, so no top-up or payout ever queues on one hot row.
--
-- wallet_transactions is what each wallet sees: its side of a movement (debit or credit).
-- The app role can only SELECT these tables; every write goes through the SECURITY DEFINER
-- functions of functions.sql, and protect.sql refuses UPDATE/DELETE of what is append-only.

CREATE TABLE ledger_transactions (
    id uuid PRIMARY KEY,
    -- `VP-TXN-` + 8 characters from a CSPRNG; NULL only for internal movements no wallet
    -- sees (a payout leaving payouts-in-flight for the bank).
    reference text UNIQUE CONSTRAINT ledger_transactions_reference_format
        CHECK (reference ~ '^VP-TXN-[A-Z0-9]{8}$'),
    kind text NOT NULL CONSTRAINT ledger_transactions_kind_valid
        CHECK (kind IN ('TOP_UP', 'P2P', 'WITHDRAW', 'PAYOUT_SETTLED', 'PAYOUT_RETURNED',
                        'REFUND', 'REVERSAL')),
    currency text NOT NULL CONSTRAINT ledger_transactions_currency_format
        CHECK (currency ~ '^[A-Z]{3}$'),
    amount bigint NOT NULL CONSTRAINT ledger_transactions_amount_positive CHECK (amount > 0),
    created_at timestamptz NOT NULL
);

CREATE TABLE ledger_postings (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ledger_transaction_id uuid NOT NULL REFERENCES ledger_transactions (id),
    account text NOT NULL CONSTRAINT ledger_postings_account_format
        CHECK (account ~ '^(VPY-[A-Z0-9]{6}|sys:[a-z_]+)$'),
    currency text NOT NULL CONSTRAINT ledger_postings_currency_format
        CHECK (currency ~ '^[A-Z]{3}$'),
    -- Signed minor units: negative leaves the account, positive enters it.
    amount bigint NOT NULL CONSTRAINT ledger_postings_amount_nonzero CHECK (amount <> 0),
    created_at timestamptz NOT NULL
);
CREATE INDEX ledger_postings_transaction_idx ON ledger_postings (ledger_transaction_id);

CREATE TABLE wallet_transactions (
    id uuid PRIMARY KEY,
    ledger_transaction_id uuid NOT NULL REFERENCES ledger_transactions (id),
    reference text NOT NULL,
    -- The client's request_id on the side of the wallet that asked; NULL on the other side.
    request_id uuid,
    user_id text NOT NULL,
    wallet_id text NOT NULL,
    type text NOT NULL CONSTRAINT wallet_transactions_type_valid
        CHECK (type IN ('CREDIT', 'DEBIT')),
    category text NOT NULL CONSTRAINT wallet_transactions_category_valid
        CHECK (category IN ('TOP_UP', 'P2P_SEND', 'P2P_RECEIVE', 'WITHDRAW', 'REFUND',
                            'REVERSAL')),
    status text NOT NULL CONSTRAINT wallet_transactions_status_valid
        CHECK (status IN ('PENDING', 'COMPLETED', 'FAILED', 'REVERSED')),
    amount bigint NOT NULL CONSTRAINT wallet_transactions_amount_positive CHECK (amount > 0),
    currency text NOT NULL,
    balance_after bigint NOT NULL CONSTRAINT wallet_transactions_balance_after_not_negative
        CHECK (balance_after >= 0),
    counterparty_wallet_id text NOT NULL DEFAULT '',
    counterparty_name text NOT NULL DEFAULT '',
    counterparty_description text NOT NULL DEFAULT '',
    note text NOT NULL DEFAULT '',
    original_transaction_id uuid REFERENCES wallet_transactions (id),
    reversed_amount bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    completed_at timestamptz,
    CONSTRAINT wallet_transactions_reversed_in_range
        CHECK (reversed_amount >= 0 AND reversed_amount <= amount),
    CONSTRAINT wallet_transactions_completed_unless_pending
        CHECK ((status = 'PENDING') = (completed_at IS NULL))
);
-- A user's history (and each category filter): one index range per page, whatever the size
-- of the table.
CREATE INDEX wallet_transactions_user_idx
    ON wallet_transactions (user_id, created_at DESC, id DESC);
CREATE INDEX wallet_transactions_user_category_idx
    ON wallet_transactions (user_id, category, created_at DESC, id DESC);
-- Staff views: everything newest first, one wallet, the pending payouts.
CREATE INDEX wallet_transactions_created_idx ON wallet_transactions (created_at DESC, id DESC);
CREATE INDEX wallet_transactions_wallet_idx
    ON wallet_transactions (wallet_id, created_at DESC, id DESC);
CREATE INDEX wallet_transactions_pending_idx
    ON wallet_transactions (created_at DESC, id DESC) WHERE status = 'PENDING';
CREATE INDEX wallet_transactions_reference_idx ON wallet_transactions (reference);
-- (Dropped again by t0002: no query needs it; see t0002_upgrade.sql.)
CREATE INDEX wallet_transactions_ledger_idx ON wallet_transactions (ledger_transaction_id);
-- One movement per request_id and user, whatever the method: a request_id that moved money
-- once can never move money again, even after its idempotency record expired.
CREATE UNIQUE INDEX wallet_transactions_request_idx
    ON wallet_transactions (user_id, request_id) WHERE request_id IS NOT NULL;

-- External payments already credited: a payment reference is accepted once per method.
CREATE TABLE top_up_payments (
    payment_method text NOT NULL CONSTRAINT top_up_payments_method_valid
        CHECK (payment_method IN ('UPI', 'CARD', 'NET_BANKING')),
    payment_reference text NOT NULL,
    transaction_id uuid NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (payment_method, payment_reference)
);

-- Withdrawals on their way to the bank. The account number is never stored: only its mask
-- (last four digits) and a keyed hash (the simulated bank decides from it).
CREATE TABLE payouts (
    transaction_id uuid PRIMARY KEY REFERENCES wallet_transactions (id),
    ledger_transaction_id uuid NOT NULL REFERENCES ledger_transactions (id),
    wallet_id text NOT NULL,
    currency text NOT NULL,
    amount bigint NOT NULL CONSTRAINT payouts_amount_positive CHECK (amount > 0),
    ifsc text NOT NULL CONSTRAINT payouts_ifsc_format CHECK (ifsc ~ '^[A-Z]{4}0[A-Z0-9]{6}$'),
    account_mask text NOT NULL,
    account_hash text NOT NULL CONSTRAINT payouts_account_hash_format
        CHECK (account_hash ~ '^[0-9a-f]{64}$'),
    holder_name text NOT NULL,
    status text NOT NULL CONSTRAINT payouts_status_valid
        CHECK (status IN ('PENDING', 'SETTLED', 'RETURNED')),
    attempts integer NOT NULL DEFAULT 0,
    failure_reason text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL,
    -- When the payout worker may (re)try it: a lease while one worker asks the bank.
    available_at timestamptz NOT NULL,
    finished_at timestamptz
);
CREATE INDEX payouts_due_idx ON payouts (available_at) WHERE status = 'PENDING';

-- Limit usage per wallet, action and business day (Asia/Kolkata), kept by the functions
-- under the wallet's row lock: a limit check reads at most 31 rows, however long the history.
CREATE TABLE limit_usage (
    wallet_id text NOT NULL,
    action text NOT NULL CONSTRAINT limit_usage_action_valid
        CHECK (action IN ('send', 'withdraw', 'top_up')),
    day date NOT NULL,
    used bigint NOT NULL CONSTRAINT limit_usage_used_not_negative CHECK (used >= 0),
    PRIMARY KEY (wallet_id, action, day)
);
