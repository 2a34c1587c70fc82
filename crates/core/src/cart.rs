//! A buyer's cart and its rules (quantity bounds, one line per sku), as pure functions on
//! [`Cart`]. The storefront keeps carts in MongoDB and writes a new version only if nobody
//! changed the cart meanwhile.

use crate::domain::{Quantity, Sku};
use crate::refusal::{Refusal, UserErrorCode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartItem {
    pub sku: String,
    pub quantity: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cart {
    pub items: Vec<CartItem>,
    /// Optimistic-concurrency version; 0 for a cart never saved.
    pub version: i64,
}

/// A cart holds at most this many distinct skus.
pub const MAX_LINES: usize = 50;

fn not_in_cart(sku: &Sku) -> Refusal {
    Refusal::new(UserErrorCode::NotInCart, format!("{} is not in the cart", sku.as_str()))
}

impl Cart {
    /// Adds `q` units of `sku`; the line's total must stay within [`Quantity::MAX`].
    pub fn add(&mut self, sku: &Sku, q: Quantity) -> Result<(), Refusal> {
        match self.items.iter_mut().find(|i| i.sku == sku.as_str()) {
            Some(item) => {
                let total = Quantity::parse(item.quantity as i64 + q.get() as i64).map_err(|_| {
                    Refusal::new(
                        UserErrorCode::LineQuantityTooLarge,
                        format!("a line holds at most {} units", Quantity::MAX),
                    )
                })?;
                item.quantity = total.get();
            }
            None => {
                if self.items.len() >= MAX_LINES {
                    return Err(Refusal::new(
                        UserErrorCode::TooManyLines,
                        format!("a cart holds at most {MAX_LINES} different items"),
                    ));
                }
                self.items.push(CartItem { sku: sku.as_str().to_string(), quantity: q.get() });
            }
        }
        Ok(())
    }

    /// Sets the quantity of a line already in the cart.
    pub fn update(&mut self, sku: &Sku, q: Quantity) -> Result<(), Refusal> {
        let item = self.items.iter_mut().find(|i| i.sku == sku.as_str()).ok_or_else(|| not_in_cart(sku))?;
        item.quantity = q.get();
        Ok(())
    }

    pub fn remove(&mut self, sku: &Sku) -> Result<(), Refusal> {
        let before = self.items.len();
        self.items.retain(|i| i.sku != sku.as_str());
        if self.items.len() == before {
            return Err(not_in_cart(sku));
        }
        Ok(())
    }

    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// Takes an order's units out of the cart: each line loses the quantity that was ordered, and
    /// goes when nothing is left. Units of the same sku added after the order was placed stay.
    pub fn take_ordered(&mut self, ordered: &[(String, i32)]) {
        for (sku, quantity) in ordered {
            if let Some(item) = self.items.iter_mut().find(|i| &i.sku == sku) {
                item.quantity -= quantity;
            }
        }
        self.items.retain(|i| i.quantity > 0);
    }

    /// Puts a cancelled order's units back, merged with what the buyer added since; a line never
    /// exceeds [`Quantity::MAX`] and the cart never exceeds [`MAX_LINES`] lines (the excess is dropped).
    pub fn put_back(&mut self, ordered: &[(String, i32)]) {
        for (sku, quantity) in ordered {
            let room = self.items.len() < MAX_LINES;
            match self.items.iter_mut().find(|i| &i.sku == sku) {
                Some(item) => item.quantity = (item.quantity + quantity).min(Quantity::MAX),
                None if room => {
                    self.items.push(CartItem { sku: sku.clone(), quantity: (*quantity).min(Quantity::MAX) })
                }
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sku(s: &str) -> Sku {
        Sku::parse(s).unwrap()
    }
    fn q(n: i64) -> Quantity {
        Quantity::parse(n).unwrap()
    }

    #[test]
    fn putting_a_cancelled_order_back_merges_and_caps() {
        let mut c = Cart::default();
        c.add(&sku("MUG-001"), q(98)).unwrap();
        c.put_back(&[("MUG-001".into(), 5), ("TEE-002".into(), 2)]);
        let items: Vec<_> = c.items.iter().map(|i| (i.sku.as_str(), i.quantity)).collect();
        assert_eq!(items, vec![("MUG-001", 99), ("TEE-002", 2)]);
    }

    #[test]
    fn taking_an_order_out_keeps_units_added_after_it() {
        let mut c = Cart::default();
        c.add(&sku("MUG-001"), q(3)).unwrap();
        c.add(&sku("TEE-002"), q(1)).unwrap();
        c.add(&sku("BAG-003"), q(2)).unwrap();
        // Ordered: 2 mugs (1 more was added since), the tee, and a pen no longer in the cart.
        c.take_ordered(&[("MUG-001".into(), 2), ("TEE-002".into(), 1), ("PEN-004".into(), 1)]);
        let left: Vec<_> = c.items.iter().map(|i| (i.sku.as_str(), i.quantity)).collect();
        assert_eq!(left, vec![("MUG-001", 1), ("BAG-003", 2)]);
        // A line emptied meanwhile by the buyer cannot go negative.
        c.take_ordered(&[("BAG-003".into(), 5)]);
        assert_eq!(c.items.len(), 1);
    }

    #[test]
    fn adding_twice_merges_lines_within_bounds() {
        let mut c = Cart::default();
        c.add(&sku("A"), q(2)).unwrap();
        c.add(&sku("A"), q(3)).unwrap();
        assert_eq!(c.items, [CartItem { sku: "A".into(), quantity: 5 }]);
        let before = c.clone();
        assert_eq!(c.add(&sku("A"), q(95)).unwrap_err().code, UserErrorCode::LineQuantityTooLarge);
        assert_eq!(c, before, "a refused change leaves the cart as it was");
    }

    #[test]
    fn update_and_remove_need_the_line() {
        let mut c = Cart::default();
        assert_eq!(c.update(&sku("A"), q(1)).unwrap_err().code, UserErrorCode::NotInCart);
        assert_eq!(c.remove(&sku("A")).unwrap_err().code, UserErrorCode::NotInCart);
        c.add(&sku("A"), q(1)).unwrap();
        c.update(&sku("A"), q(7)).unwrap();
        assert_eq!(c.items[0].quantity, 7);
        c.remove(&sku("A")).unwrap();
        assert!(c.items.is_empty());
    }

    #[test]
    fn line_count_is_bounded() {
        let mut c = Cart::default();
        for i in 0..MAX_LINES {
            c.add(&sku(&format!("S-{i}")), q(1)).unwrap();
        }
        assert_eq!(c.add(&sku("ONE-MORE"), q(1)).unwrap_err().code, UserErrorCode::TooManyLines);
    }
}
