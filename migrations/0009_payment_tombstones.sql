-- A void that overtakes its authorization leaves a VOIDED tombstone before any amount or
-- currency is known: it has neither, instead of a placeholder currency.
ALTER TABLE payments ALTER COLUMN currency DROP NOT NULL;
UPDATE payments SET currency = NULL, amount_minor = 0 WHERE currency = 'XXX';
ALTER TABLE payments ADD CONSTRAINT payments_currency_known CHECK (currency IS NOT NULL OR status = 'VOIDED');
