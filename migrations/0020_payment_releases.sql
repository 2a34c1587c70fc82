-- What the provider holds for an order that is not going to be captured, to be released by the
-- payment workers: an authorization reported (by webhook) for a payment already voided, declined
-- or refunded, one that is not the payment's own, or one whose amount or currency is not the
-- order's. One row per provider reference; `release_after` is also the lease of the worker that
-- took it, `released_at` when the provider confirmed.
CREATE TABLE payment_releases (
    reference     text PRIMARY KEY,
    order_id      uuid NOT NULL,
    reason        text NOT NULL,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    release_after timestamptz NOT NULL DEFAULT now(),
    released_at   timestamptz
);
CREATE INDEX payment_releases_due ON payment_releases (release_after) WHERE released_at IS NULL;
