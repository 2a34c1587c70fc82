//! The currencies the shop prices in: a closed set, so a client can switch on it and a typo in
//! the catalog cannot become a currency. Each carries its ISO 4217 minor unit.

/// An ISO 4217 currency the shop accepts.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::EnumIter,
    strum::Display,
)]
#[strum(serialize_all = "UPPERCASE")]
#[cfg_attr(feature = "graphql", derive(async_graphql::Enum))]
#[cfg_attr(feature = "graphql", graphql(name = "CurrencyCode"))]
pub enum CurrencyCode {
    /// United Arab Emirates dirham.
    Aed,
    /// Argentine peso.
    Ars,
    /// Australian dollar.
    Aud,
    /// Bahraini dinar (3 decimals).
    Bhd,
    /// Burundian franc (no decimals).
    Bif,
    /// Brazilian real.
    Brl,
    /// Canadian dollar.
    Cad,
    /// Swiss franc.
    Chf,
    /// Chilean Unidad de Fomento (4 decimals).
    Clf,
    /// Chilean peso (no decimals).
    Clp,
    /// Chinese yuan renminbi.
    Cny,
    /// Colombian peso.
    Cop,
    /// Czech koruna.
    Czk,
    /// Djiboutian franc (no decimals).
    Djf,
    /// Danish krone.
    Dkk,
    /// Egyptian pound.
    Egp,
    /// Euro.
    Eur,
    /// Pound sterling.
    Gbp,
    /// Guinean franc (no decimals).
    Gnf,
    /// Hong Kong dollar.
    Hkd,
    /// Hungarian forint.
    Huf,
    /// Indonesian rupiah.
    Idr,
    /// Israeli new shekel.
    Ils,
    /// Indian rupee.
    Inr,
    /// Iraqi dinar (3 decimals).
    Iqd,
    /// Icelandic króna (no decimals).
    Isk,
    /// Jordanian dinar (3 decimals).
    Jod,
    /// Japanese yen (no decimals).
    Jpy,
    /// Kenyan shilling.
    Kes,
    /// Comorian franc (no decimals).
    Kmf,
    /// South Korean won (no decimals).
    Krw,
    /// Kuwaiti dinar (3 decimals).
    Kwd,
    /// Libyan dinar (3 decimals).
    Lyd,
    /// Mexican peso.
    Mxn,
    /// Malaysian ringgit.
    Myr,
    /// Nigerian naira.
    Ngn,
    /// Norwegian krone.
    Nok,
    /// New Zealand dollar.
    Nzd,
    /// Omani rial (3 decimals).
    Omr,
    /// Peruvian sol.
    Pen,
    /// Philippine peso.
    Php,
    /// Polish złoty.
    Pln,
    /// Paraguayan guaraní (no decimals).
    Pyg,
    /// Romanian leu.
    Ron,
    /// Rwandan franc (no decimals).
    Rwf,
    /// Saudi riyal.
    Sar,
    /// Swedish krona.
    Sek,
    /// Singapore dollar.
    Sgd,
    /// Thai baht.
    Thb,
    /// Tunisian dinar (3 decimals).
    Tnd,
    /// Turkish lira.
    Try,
    /// New Taiwan dollar.
    Twd,
    /// Ukrainian hryvnia.
    Uah,
    /// Ugandan shilling (no decimals).
    Ugx,
    /// United States dollar.
    Usd,
    /// Uruguayan peso in indexed units (no decimals).
    Uyi,
    /// Uruguayan peso.
    Uyu,
    /// Uruguayan unidad previsional (4 decimals).
    Uyw,
    /// Vietnamese đồng (no decimals).
    Vnd,
    /// Vanuatu vatu (no decimals).
    Vuv,
    /// Central African CFA franc (no decimals).
    Xaf,
    /// West African CFA franc (no decimals).
    Xof,
    /// CFP franc (no decimals).
    Xpf,
    /// South African rand.
    Zar,
}

impl CurrencyCode {
    /// The ISO 4217 code (`"USD"`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(code: &str) -> Option<Self> {
        code.parse().ok()
    }

    /// Digits after the decimal point (ISO 4217's minor unit).
    pub fn minor_digits(self) -> u32 {
        use CurrencyCode::*;
        match self {
            Bif | Clp | Djf | Gnf | Isk | Jpy | Kmf | Krw | Pyg | Rwf | Ugx | Uyi | Vnd | Vuv | Xaf | Xof
            | Xpf => 0,
            Bhd | Iqd | Jod | Kwd | Lyd | Omr | Tnd => 3,
            Clf | Uyw => 4,
            _ => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::IntoEnumIterator;

    #[test]
    fn codes_are_iso_4217_shaped_and_parse_back() {
        for c in CurrencyCode::iter() {
            let s = c.as_str();
            assert!(s.len() == 3 && s.chars().all(|ch| ch.is_ascii_uppercase()), "{s}");
            assert_eq!(CurrencyCode::parse(s), Some(c));
        }
        assert_eq!(CurrencyCode::parse("usd"), None);
        assert_eq!(CurrencyCode::parse("XXX"), None);
        assert_eq!((CurrencyCode::Usd.minor_digits(), CurrencyCode::Jpy.minor_digits()), (2, 0));
        assert_eq!((CurrencyCode::Kwd.minor_digits(), CurrencyCode::Clf.minor_digits()), (3, 4));
    }
}
