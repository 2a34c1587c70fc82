-- Who to reach about an order and where it ships, as the buyer gave them at checkout
-- (`placeOrder(input:)`). Both are null for orders placed before, or through the deprecated flat
-- arguments. The address is the JSON of `ShippingAddress` (camelCase fields), checked before it is
-- written. Nullable columns without a default: adding them rewrites no row.
ALTER TABLE orders
    ADD COLUMN email text,
    ADD COLUMN shipping_address jsonb;
