//! Input newtypes: parsed at the edge, so the rest of the code cannot hold an invalid one.

use std::fmt;

use crate::currency::CurrencyCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValidationError(pub String);

fn invalid(msg: impl Into<String>) -> ValidationError {
    ValidationError(msg.into())
}

/// A normalized (trimmed, lower-cased) e-mail address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let s = raw.trim().to_lowercase();
        let valid = s.len() <= 254
            && s.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && local.len() <= 64
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains('@')
            })
            && !s.chars().any(|c| c.is_whitespace() || c.is_control());
        if valid {
            Ok(Email(s))
        } else {
            Err(invalid("email is not a valid address"))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Which bound a password misses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordLength {
    /// Fewer than [`Password::MIN`] characters.
    TooShort,
    /// More than [`Password::MAX`] characters.
    TooLong,
}

/// A password as typed: long enough to matter, short enough not to be a hashing DoS.
pub struct Password(String);

impl Password {
    pub const MIN: usize = 8;
    pub const MAX: usize = 128;
    /// The password, or which bound it misses.
    pub fn check(raw: &str) -> Result<Self, PasswordLength> {
        let n = raw.chars().count();
        if n < Self::MIN {
            return Err(PasswordLength::TooShort);
        }
        if n > Self::MAX {
            return Err(PasswordLength::TooLong);
        }
        Ok(Password(raw.to_string()))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// A stock-keeping unit: `A-Z`, digits and `-`, 1 to 32 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sku(String);

impl Sku {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let ok = (1..=32).contains(&raw.len())
            && raw.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(Sku(raw.to_string()))
        } else {
            Err(invalid("sku must be 1-32 characters of A-Z, 0-9 and '-'"))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn into_string(self) -> String {
        self.0
    }
}

/// How many units of one sku a cart line or order line holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(i32);

impl Quantity {
    /// More than this of one item in one order is not a purchase a shop accepts online.
    pub const MAX: i32 = 99;
    pub fn parse(raw: i64) -> Result<Self, ValidationError> {
        if raw <= 0 {
            Err(invalid("quantity must be at least 1"))
        } else if raw > Self::MAX as i64 {
            Err(invalid(format!("quantity must be at most {}", Self::MAX)))
        } else {
            Ok(Quantity(raw as i32))
        }
    }
    pub fn get(self) -> i32 {
        self.0
    }
}

/// Digits after the decimal point in `currency` (ISO 4217's minor unit; 2 for a code the shop
/// does not price in).
pub fn minor_digits(currency: &str) -> u32 {
    CurrencyCode::parse(currency).map_or(2, CurrencyCode::minor_digits)
}

/// `minor` units of `currency` as a decimal string in major units, exact at any size (`-5` cents
/// are `"-0.05"`).
pub fn decimal(minor: i64, currency: &str) -> String {
    let digits = minor_digits(currency) as usize;
    let sign = if minor < 0 { "-" } else { "" };
    let units = minor.unsigned_abs().to_string();
    if digits == 0 {
        return format!("{sign}{units}");
    }
    let padded = format!("{units:0>width$}", width = digits + 1);
    let (major, fraction) = padded.split_at(padded.len() - digits);
    format!("{sign}{major}.{fraction}")
}

/// An amount in integer minor units (cents) of an ISO-4217 currency. Only [`Money::new`] builds
/// one, so every value is non-negative in a [`CurrencyCode`] the shop prices in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    minor: i64,
    currency: String,
}

impl Money {
    pub fn new(minor: i64, currency: &str) -> Result<Self, ValidationError> {
        if minor < 0 {
            return Err(invalid("amount must not be negative"));
        }
        if CurrencyCode::parse(currency).is_none() {
            return Err(invalid(format!("{currency:?} is not a currency the shop prices in")));
        }
        Ok(Money { minor, currency: currency.to_string() })
    }

    /// The amount in minor units (cents).
    pub fn minor(&self) -> i64 {
        self.minor
    }

    /// The ISO-4217 code.
    pub fn currency(&self) -> &str {
        &self.currency
    }

    /// The amount in major units as a decimal string (`1250` cents of USD are `"12.50"`).
    pub fn decimal(&self) -> String {
        decimal(self.minor, &self.currency)
    }

    /// This amount `q` times; `None` on overflow or a negative `q`.
    pub fn times(&self, q: i32) -> Option<Money> {
        if q < 0 {
            return None;
        }
        Some(Money { minor: self.minor.checked_mul(q as i64)?, currency: self.currency.clone() })
    }

    pub fn checked_add(&self, other: &Money) -> Option<Money> {
        if self.currency != other.currency {
            return None;
        }
        Some(Money { minor: self.minor.checked_add(other.minor)?, currency: self.currency.clone() })
    }
}

/// A client-chosen key that makes `placeOrder` safe to retry: 1 to 64 of `A-Za-z0-9_-:.`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let ok = (1..=64).contains(&raw.len())
            && raw.chars().all(|c| c.is_ascii_alphanumeric() || "_-:.".contains(c));
        if ok {
            Ok(IdempotencyKey(raw.to_string()))
        } else {
            Err(invalid("idempotencyKey must be 1-64 characters of A-Z, a-z, 0-9, '_', '-', ':', '.'"))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An opaque token from the payment provider's client-side SDK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentToken(String);

impl PaymentToken {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let ok = (1..=128).contains(&raw.len()) && raw.chars().all(|c| c.is_ascii_graphic());
        if ok {
            Ok(PaymentToken(raw.to_string()))
        } else {
            Err(invalid("paymentToken must be 1-128 printable ASCII characters"))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(Email::parse("  Ann@Example.COM ").unwrap().as_str(), "ann@example.com");
        for bad in ["", "ann", "@x.com", "ann@", "ann@com", "a b@x.com", "ann@x.com.", "a@b@c.com"] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quantities_are_bounded() {
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(-3).is_err());
        assert!(Quantity::parse(100).is_err());
        assert!(Quantity::parse(i64::MAX).is_err());
        assert_eq!(Quantity::parse(99).unwrap().get(), 99);
    }

    #[test]
    fn skus_keys_and_tokens() {
        assert!(Sku::parse("MUG-001").is_ok());
        assert!(Sku::parse("mug").is_err());
        assert!(Sku::parse("").is_err());
        assert!(IdempotencyKey::parse("order-1").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(65)).is_err());
        assert!(IdempotencyKey::parse("a b").is_err());
        assert!(PaymentToken::parse("tok_visa").is_ok());
        assert!(PaymentToken::parse("").is_err());
        assert_eq!(Password::check("short").err(), Some(PasswordLength::TooShort));
        assert_eq!(Password::check(&"x".repeat(129)).err(), Some(PasswordLength::TooLong));
        assert!(format!("{:?}", Password::check("long enough").unwrap()).contains("***"));
    }

    #[test]
    fn money_refuses_mixed_currencies_and_overflow() {
        let a = Money::new(100, "USD").unwrap();
        assert!(a.checked_add(&Money::new(1, "EUR").unwrap()).is_none());
        assert_eq!(a.times(3).unwrap().minor(), 300);
        assert_eq!(a.times(-1), None);
        assert!(Money::new(i64::MAX, "USD").unwrap().times(2).is_none());
        assert!(Money::new(-1, "USD").is_err());
        assert!(Money::new(1, "usd").is_err());
        assert!(Money::new(1, "XXX").is_err(), "not a currency the shop prices in");
    }

    #[test]
    fn decimal_amounts_follow_the_currencys_minor_unit() {
        assert_eq!(decimal(1250, "USD"), "12.50");
        assert_eq!(decimal(5, "EUR"), "0.05");
        assert_eq!(decimal(-5, "EUR"), "-0.05");
        assert_eq!(decimal(0, "USD"), "0.00");
        assert_eq!(decimal(1250, "JPY"), "1250");
        assert_eq!(decimal(1250, "KWD"), "1.250");
        assert_eq!(decimal(i64::MAX, "USD"), "92233720368547758.07", "beyond any 32-bit Int");
        assert_eq!(decimal(i64::MIN, "USD"), "-92233720368547758.08");
        assert_eq!(Money::new(999, "GBP").unwrap().decimal(), "9.99");
    }
}
