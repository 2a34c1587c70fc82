//! Where an order ships: checked where it comes in, like the other inputs, and stored with the
//! order as written here.

use serde::{Deserialize, Serialize};

use crate::refusal::{Refusal, UserErrorCode};

/// Where an order ships, as it was checked and stored when the order was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "graphql", derive(async_graphql::SimpleObject))]
pub struct ShippingAddress {
    /// Who receives the parcel (1 to 100 characters).
    pub name: String,
    /// Street and number (1 to 200 characters).
    pub line1: String,
    /// Apartment, suite, building (at most 200 characters).
    pub line2: Option<String>,
    /// City or town (1 to 100 characters).
    pub city: String,
    /// State, province or region, where the country has them (at most 100 characters).
    pub region: Option<String>,
    /// 1 to 16 of `A-Z a-z 0-9`, space and `-`.
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, upper case (`DE`, `US`).
    pub country_code: String,
}

/// ISO 3166-1 alpha-2: the officially assigned codes.
const COUNTRIES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS \
BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM \
FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP \
KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV \
MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD \
SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC \
VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// One field as typed: trimmed, within `min..=max` characters, without control characters.
fn text(raw: &str, min: usize, max: usize, field: &'static str, what: &str) -> Result<String, Refusal> {
    let s = raw.trim();
    let n = s.chars().count();
    let refuse = |message: String| {
        Refusal::new(UserErrorCode::InvalidAddress, message).at(&["shippingAddress", field])
    };
    if n < min {
        return Err(refuse(format!("Enter the {what}.")));
    }
    if n > max {
        return Err(refuse(format!("The {what} can have at most {max} characters.")));
    }
    if s.chars().any(char::is_control) {
        return Err(refuse(format!("The {what} has characters an address cannot have.")));
    }
    Ok(s.to_string())
}

fn optional(
    raw: Option<&str>,
    max: usize,
    field: &'static str,
    what: &str,
) -> Result<Option<String>, Refusal> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => text(s, 1, max, field, what).map(Some),
        None => Ok(None),
    }
}

/// Where an order ships, as the buyer typed it; every field is trimmed and checked, and each
/// one at fault comes back as an `INVALID_ADDRESS` user error naming it.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "graphql", derive(async_graphql::InputObject))]
pub struct ShippingAddressInput {
    /// Who receives the parcel (1 to 100 characters).
    pub name: String,
    /// Street and number (1 to 200 characters).
    pub line1: String,
    /// Apartment, suite, building (at most 200 characters).
    pub line2: Option<String>,
    /// City or town (1 to 100 characters).
    pub city: String,
    /// State, province or region, where the country has them (at most 100 characters).
    pub region: Option<String>,
    /// 1 to 16 of `A-Z a-z 0-9`, space and `-`.
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 (`DE`, `US`), any case.
    pub country_code: String,
}

/// The field's value, or its refusal kept with the others.
fn keep<T>(refused: &mut Vec<Refusal>, r: Result<T, Refusal>) -> Option<T> {
    r.map_err(|e| refused.push(e)).ok()
}

impl ShippingAddress {
    /// Checks every field; each at fault is refused with `INVALID_ADDRESS` naming it
    /// (`["shippingAddress", "postalCode"]`), in the order a form shows them, so a form can mark
    /// them all at once.
    pub fn parse(f: &ShippingAddressInput) -> Result<Self, Vec<Refusal>> {
        let mut refused = Vec::new();
        let name = keep(&mut refused, text(&f.name, 1, 100, "name", "recipient's name"));
        let line1 = keep(&mut refused, text(&f.line1, 1, 200, "line1", "street address"));
        let line2 = keep(&mut refused, optional(f.line2.as_deref(), 200, "line2", "second address line"));
        let city = keep(&mut refused, text(&f.city, 1, 100, "city", "city"));
        let region = keep(&mut refused, optional(f.region.as_deref(), 100, "region", "region"));
        let postal_code = keep(
            &mut refused,
            text(&f.postal_code, 1, 16, "postalCode", "postal code").and_then(|p| {
                if p.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-') {
                    Ok(p)
                } else {
                    Err(Refusal::new(
                        UserErrorCode::InvalidAddress,
                        "A postal code has only letters, digits, spaces and dashes.",
                    )
                    .at(&["shippingAddress", "postalCode"]))
                }
            }),
        );
        let country_code = keep(&mut refused, {
            let c = f.country_code.trim().to_ascii_uppercase();
            if c.len() == 2 && COUNTRIES.split(' ').any(|known| known == c) {
                Ok(c)
            } else {
                Err(Refusal::new(
                    UserErrorCode::InvalidAddress,
                    "Choose a country (an ISO 3166-1 alpha-2 code such as DE or US).",
                )
                .at(&["shippingAddress", "countryCode"]))
            }
        });
        match (name, line1, line2, city, region, postal_code, country_code) {
            (
                Some(name),
                Some(line1),
                Some(line2),
                Some(city),
                Some(region),
                Some(postal_code),
                Some(country_code),
            ) => Ok(ShippingAddress { name, line1, line2, city, region, postal_code, country_code }),
            _ => Err(refused),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> ShippingAddressInput {
        ShippingAddressInput {
            name: " Ada Lovelace ".into(),
            line1: "12 St James's Square".into(),
            line2: Some("  ".into()),
            city: "London".into(),
            region: None,
            postal_code: "SW1Y 4JH".into(),
            country_code: "gb".into(),
        }
    }

    #[test]
    fn a_valid_address_is_trimmed_and_normalized() {
        let a = ShippingAddress::parse(&fields()).unwrap();
        assert_eq!(a.name, "Ada Lovelace");
        assert_eq!(a.line2, None, "a blank optional line is no line");
        assert_eq!(a.country_code, "GB");
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["postalCode"], "SW1Y 4JH");
        assert_eq!(serde_json::from_value::<ShippingAddress>(json).unwrap(), a);
    }

    #[test]
    fn each_field_at_fault_is_named() {
        let cases = [
            (ShippingAddressInput { name: "  ".into(), ..fields() }, "name"),
            (ShippingAddressInput { line1: "".into(), ..fields() }, "line1"),
            (ShippingAddressInput { line2: Some("x".repeat(201)), ..fields() }, "line2"),
            (ShippingAddressInput { city: "Lon\u{0}don".into(), ..fields() }, "city"),
            (ShippingAddressInput { postal_code: "SW1Y_4JH".into(), ..fields() }, "postalCode"),
            (ShippingAddressInput { country_code: "XX".into(), ..fields() }, "countryCode"),
            (ShippingAddressInput { country_code: "GBR".into(), ..fields() }, "countryCode"),
        ];
        for (f, field) in cases {
            let r = ShippingAddress::parse(&f).unwrap_err();
            assert_eq!(r.len(), 1, "{r:?}");
            assert_eq!(r[0].code, UserErrorCode::InvalidAddress);
            assert_eq!(r[0].field, Some(vec!["shippingAddress".to_string(), field.to_string()]), "{f:?}");
        }
    }

    #[test]
    fn every_field_at_fault_is_named_at_once_in_form_order() {
        let r = ShippingAddress::parse(&ShippingAddressInput {
            name: "".into(),
            postal_code: "".into(),
            country_code: "".into(),
            ..fields()
        })
        .unwrap_err();
        let named: Vec<_> = r.iter().map(|r| r.field.clone().unwrap()[1].clone()).collect();
        assert_eq!(named, ["name", "postalCode", "countryCode"]);
    }
}
