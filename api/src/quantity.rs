//! Kubernetes resource quantities (`10Gi`, `500M`, `1.5Gi`, `000500Mi`, `1e3`), parsed as
//! `k8s.io/apimachinery/pkg/api/resource` does: an optional sign, digits with an optional
//! decimal point, and one suffix (binary `Ki`..`Ei`, decimal `n u m k M G T P E`, or an
//! exponent `e3`/`E-2`). A byte count is the value rounded up to a whole number, as
//! `Quantity.Value()` rounds. The text is kept as written, so a spec re-serializes unchanged.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest quantity text accepted (Kubernetes' own values fit in a few dozen characters).
const MAX_LEN: usize = 64;

/// Kubernetes' own words for a quantity that does not parse.
pub const FORMAT_ERROR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("{FORMAT_ERROR}")]
    Format,
    #[error("quantity {0} is too large")]
    TooLarge(String),
    #[error("quantity {0} is negative")]
    Negative(String),
}

/// A quantity as written, validated at parse time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity {
    text: String,
    parsed: Parsed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parsed {
    negative: bool,
    /// The digits without the decimal point, as one integer.
    mantissa: u128,
    /// Power of ten to apply to `mantissa` (the fraction digits count against it).
    exp10: i32,
    /// Power of two to apply (binary suffixes).
    exp2: u32,
}

impl Quantity {
    pub fn parse(text: &str) -> Result<Quantity, QuantityError> {
        let parsed = parse(text)?;
        Ok(Quantity {
            text: text.to_string(),
            parsed,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value in whole units, rounded up (Kubernetes' `Value()`), refusing negative
    /// values and values past `u64`.
    pub fn value(&self) -> Result<u64, QuantityError> {
        let p = self.parsed;
        if p.negative && p.mantissa != 0 {
            return Err(QuantityError::Negative(self.text.clone()));
        }
        let too_large = || QuantityError::TooLarge(self.text.clone());
        let mut n = p.mantissa.checked_shl(p.exp2).ok_or_else(too_large)?;
        if p.exp2 > 0 && n >> p.exp2 != p.mantissa {
            return Err(too_large());
        }
        if p.exp10 >= 0 {
            let m = 10u128
                .checked_pow(p.exp10.unsigned_abs())
                .ok_or_else(too_large)?;
            n = n.checked_mul(m).ok_or_else(too_large)?;
        } else {
            match 10u128.checked_pow(p.exp10.unsigned_abs()) {
                Some(d) => n = n.div_ceil(d),
                // Smaller than any unit: rounds up to 1 unless it is zero.
                None => n = u128::from(n != 0),
            }
        }
        u64::try_from(n).map_err(|_| too_large())
    }

    pub fn is_zero(&self) -> bool {
        self.parsed.mantissa == 0
    }
}

fn parse(text: &str) -> Result<Parsed, QuantityError> {
    if text.is_empty() || text.len() > MAX_LEN || !text.is_ascii() {
        return Err(QuantityError::Format);
    }
    let (negative, rest) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let num_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(num_end);
    let (int, frac) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return Err(QuantityError::Format);
    }
    let mut mantissa: u128 = 0;
    for d in int.bytes().chain(frac.bytes()) {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(u128::from(d - b'0')))
            .ok_or(QuantityError::Format)?;
    }
    let frac_len = i32::try_from(frac.len()).map_err(|_| QuantityError::Format)?;
    let (exp10, exp2) = suffix_powers(suffix)?;
    Ok(Parsed {
        negative,
        mantissa,
        exp10: exp10 - frac_len,
        exp2,
    })
}

/// (power of ten, power of two) of a suffix.
fn suffix_powers(suffix: &str) -> Result<(i32, u32), QuantityError> {
    Ok(match suffix {
        "" => (0, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        s => {
            let exp = s
                .strip_prefix('e')
                .or_else(|| s.strip_prefix('E'))
                .ok_or(QuantityError::Format)?;
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(QuantityError::Format);
            }
            let e: i32 = exp.parse().map_err(|_| QuantityError::Format)?;
            if !(-100..=100).contains(&e) {
                return Err(QuantityError::Format);
            }
            (e, 0)
        }
    })
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Kubernetes accepts a bare number as well as a string.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Unsigned(u64),
            Signed(i64),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(t) => t,
            Raw::Unsigned(n) => n.to_string(),
            Raw::Signed(n) => n.to_string(),
        };
        Quantity::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Quantity {
    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A Kubernetes quantity: 10Gi, 512M, 1.5Gi, or a plain number.",
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": true
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes(s: &str) -> Result<u64, QuantityError> {
        Quantity::parse(s)?.value()
    }

    #[test]
    fn values_as_kubernetes_computes_them() {
        for (text, want) in [
            ("1", 1),
            ("0", 0),
            ("1Ki", 1024),
            ("10Gi", 10 << 30),
            ("000500Mi", 500 << 20),
            ("1.5Gi", 3 << 29),
            ("512M", 512_000_000),
            ("1k", 1000),
            ("1e3", 1000),
            ("1E3", 1000),
            ("1.5", 2),
            ("100m", 1),
            ("0.1Ki", 103),
            ("+1Mi", 1 << 20),
            ("5e-1", 1),
            (".5Ki", 512),
            ("1.", 1),
            ("8Ei", 8 << 60),
        ] {
            assert_eq!(bytes(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn malformed_quantities_are_refused_with_kubernetes_words() {
        for text in [
            "", "2Ng", "Gi", "1 Gi", "1GiB", "1..5", ".", "-", "1e", "1e+", "1KiB", "ten", "1Ki2",
            "1.2.3", "1gi", "1K",
        ] {
            assert_eq!(bytes(text), Err(QuantityError::Format), "{text:?}");
        }
        assert_eq!(QuantityError::Format.to_string(), FORMAT_ERROR);
        assert!(matches!(bytes("-1Gi"), Err(QuantityError::Negative(_))));
        assert!(matches!(bytes("16Ei"), Err(QuantityError::TooLarge(_))));
        assert!(matches!(bytes("1e30"), Err(QuantityError::TooLarge(_))));
    }

    #[test]
    fn text_is_kept_and_numbers_are_accepted() {
        let q: Quantity = serde_json::from_str("\"000500Mi\"").unwrap();
        assert_eq!(serde_json::to_string(&q).unwrap(), "\"000500Mi\"");
        let q: Quantity = serde_json::from_str("1073741824").unwrap();
        assert_eq!(q.value(), Ok(1 << 30));
        assert!(serde_json::from_str::<Quantity>("\"2Ng\"").is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in ".{0,80}") {
            if let Ok(q) = Quantity::parse(&s) {
                let _ = q.value();
            }
        }

        #[test]
        fn binary_suffixes_multiply(n in 0u64..1_000_000, i in 0usize..4) {
            let (suffix, shift) = [("Ki", 10), ("Mi", 20), ("Gi", 30), ("Ti", 40)][i];
            prop_assert_eq!(bytes(&format!("{n}{suffix}")), Ok(n << shift));
        }
    }
}
